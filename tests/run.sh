#!/usr/bin/env bash
# The test command: installs what is missing, builds every test target, starts the real
# Kafka broker and HDFS (tests/services/up.sh), runs every test, and stops the services.
# Arguments replace `--all-targets` and go to `cargo test`, e.g. `tests/run.sh --test it
# ingest::` for one module of the integration tests (tests/it/), `tests/run.sh --lib` for
# the unit tests. HOFFREC_KEEP_SERVICES=1 leaves the services running for the next run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

last=$SECONDS
took() { echo "== run.sh: $1 took $((SECONDS - last)) s"; last=$SECONDS; }

tests/setup.sh
took setup
[ $# -gt 0 ] || set -- --all-targets
# Built before the services start, so a compile error costs no service start-up and the
# build and the run are timed apart.
cargo test --locked --no-run "$@"
took build

if [ "${HOFFREC_KEEP_SERVICES:-0}" != 1 ]; then
  trap 'tests/services/down.sh' EXIT
fi
# --fresh: a test run starts on empty storage (see up.sh).
addresses=$(tests/services/up.sh --fresh)
echo "$addresses"
export KAFKA_BOOTSTRAP HDFS_URL
KAFKA_BOOTSTRAP=$(echo "$addresses" | sed -n 's/^KAFKA_BOOTSTRAP=//p')
HDFS_URL=$(echo "$addresses" | sed -n 's/^HDFS_URL=//p')
# The service tests skip themselves when these are missing (a plain `cargo test`); here
# a missing address must fail them instead (tests/it/common/services.rs).
export HOFFREC_REQUIRE_SERVICES=1
took services

cargo test --locked "$@"
took tests
