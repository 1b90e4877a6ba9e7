#!/usr/bin/env bash
# The test command: installs what is missing, starts the real Kafka broker and HDFS
# (tests/services/up.sh), runs every test, and stops the services again.
# Extra arguments go to `cargo test` (e.g. `tests/run.sh --test codec`).
# HOFFREC_KEEP_SERVICES=1 leaves the services running for the next run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

tests/setup.sh
if [ "${HOFFREC_KEEP_SERVICES:-0}" != 1 ]; then
  trap 'tests/services/down.sh' EXIT
fi
addresses=$(tests/services/up.sh)
echo "$addresses"
export KAFKA_BOOTSTRAP HDFS_URL
KAFKA_BOOTSTRAP=$(echo "$addresses" | sed -n 's/^KAFKA_BOOTSTRAP=//p')
HDFS_URL=$(echo "$addresses" | sed -n 's/^HDFS_URL=//p')

cargo test --locked --all-targets "$@"
