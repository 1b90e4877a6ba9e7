#!/usr/bin/env bash
# Installs what building and testing hoffrec needs on a fresh Debian machine, skipping
# whatever is already there: Java 17 and Maven (for the Kafka and HDFS services), the
# OpenSSL and Cyrus SASL headers librdkafka is built against, the
# Rust components used by CI, Chromium and ChromeDriver (the dashboard's browser test), and
# the Python packages the tests compare against (fastavro, pyspark with delta-spark).
set -euo pipefail

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# librdkafka is built with TLS (OpenSSL) and SASL/Kerberos (Cyrus SASL), found by pkg-config.
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need_apt+=(libssl-dev)
pkg-config --exists libsasl2 2>/dev/null || need_apt+=(libsasl2-dev)
# The consumer guide's Node snippet (tests/consumers/decode_recs.js).
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
[ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: please install: ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
  echo "setup.sh: installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup.sh: cargo is missing; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

consumers="$(dirname "${BASH_SOURCE[0]}")/consumers"
[ -d "$consumers/node_modules/avsc" ] || npm ci --prefix "$consumers" --no-audit --no-fund --silent
python3 -c 'import fastavro' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check fastavro
# tests/it/deploy.rs reads docker/compose.yaml with PyYAML.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check pyyaml
# Spark reads the lake in the ingest and mart parity tests; the Delta jars that match it
# (delta-spark_4.1 4.1.0) come through Maven in tests/services/up.sh.
python3 -c 'import pyspark, sys; sys.exit(pyspark.__version__ != "4.1.0")' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check 'pyspark==4.1.0'
