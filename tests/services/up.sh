#!/usr/bin/env bash
# Starts a real single-node Apache Kafka 4.x broker (KRaft) on 127.0.0.1:9092 and a real
# HDFS NameNode + DataNode on hdfs://127.0.0.1:9000, from Maven Central jars cached in ~/.m2.
# The broker also listens with TLS + SASL/SCRAM-SHA-512 on 127.0.0.1:9094, with a test CA,
# broker certificate and SCRAM user made here (files under $state/kafka/sasl_ssl/).
# Idempotent: services already started by this script are left running (a broker started
# before the SASL_SSL listener existed is restarted once). Waits until Kafka round-trips a
# message (on both listeners) and HDFS round-trips a file, then prints the addresses to use.
# `--fresh` (what tests/run.sh passes) first deletes the stored data of a service that is
# not running, so every test run starts on empty storage: a broker that keeps every test
# topic of every earlier run loads more logs at each start, until it no longer answers in
# time. Without it (the restart tests), data survives a stop and start.
#
# State (data, logs, pid files, generated configs) lives in one directory:
#   HOFFREC_SERVICES_DIR (default ~/.cache/hoffrec/services)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state=${HOFFREC_SERVICES_DIR:-$HOME/.cache/hoffrec/services}
kafka_port=9092
kafka_controller_port=9093
kafka_sasl_ssl_port=9094
hdfs_port=9000
wait_s=${HOFFREC_SERVICES_WAIT_S:-180}
fresh=false
case "${1:-}" in
  "") ;;
  --fresh) fresh=true ;;
  *) echo "up.sh: unknown argument ${1}; usage: up.sh [--fresh]" >&2; exit 2 ;;
esac

die() { echo "up.sh: $*" >&2; exit 1; }

command -v java >/dev/null 2>&1 || die "Java is missing: install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)."
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
[ "${java_major%%.*}" -ge 17 ] 2>/dev/null || die "Java 17 or newer is needed (found ${java_major:-unknown}); Kafka 4 and Hadoop 3.4 need it."
command -v mvn >/dev/null 2>&1 || die "Maven is missing: install it (Debian: apt-get install maven); it fetches the Kafka and Hadoop jars."

mkdir -p "$state"

# Resolve a runtime classpath from a pom (downloads into ~/.m2 once).
classpath() {
  local name=$1 out="$state/$1.classpath"
  if [ ! -s "$out" ] || [ "$here/$name/pom.xml" -nt "$out" ]; then
    echo "up.sh: resolving $name jars through Maven (cached in ~/.m2)..." >&2
    mvn -B -q -f "$here/$name/pom.xml" dependency:build-classpath -Dmdep.outputFile="$out" >"$state/$name.mvn.log" 2>&1 \
      || { rm -f "$out"; die "Maven could not resolve the $name jars; see $state/$name.mvn.log"; }
  fi
  cat "$out"
}

# A pid file names a live process that this script started (checked by its command line).
running() {
  local pidfile="$state/$1.pid"
  [ -s "$pidfile" ] || return 1
  local pid; pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null && grep -qa "hoffrec-service=$1" "/proc/$pid/cmdline" 2>/dev/null
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() { # name, then the java command line (without "java")
  local name=$1; shift
  if running "$name"; then echo "up.sh: $name already running (pid $(cat "$state/$name.pid"))" >&2; return; fi
  nohup java "-Dhoffrec-service=$name" "$@" >"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
  echo "up.sh: started $name (pid $!, log $state/$name.log)" >&2
}

stop() { # name: stops a service this script started, as down.sh --only NAME does
  running "$1" || return 0
  local pid; pid=$(cat "$state/$1.pid")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 30); do running "$1" || break; sleep 1; done
  if running "$1"; then kill -9 "$pid" 2>/dev/null; fi
  rm -f "$state/$1.pid"
}

# The end of a service's log, so a CI log shows why it did not come up.
log_tail() {
  local name
  for name in "$@"; do
    [ -s "$state/$name.log" ] || continue
    # Java logs end in stack traces: the error lines and their causes say more.
    if grep -qE 'ERROR|FATAL|Caused by' "$state/$name.log"; then
      echo "up.sh: the last errors in $state/$name.log:" >&2
      grep -E 'ERROR|FATAL|Caused by' "$state/$name.log" | tail -n 20 | cut -c1-400 | sed 's/^/    /' >&2
    else
      echo "up.sh: the last lines of $state/$name.log:" >&2
      tail -n 30 "$state/$name.log" | cut -c1-400 | sed 's/^/    /' >&2
    fi
  done
}

wait_for() { # description, the services it needs (space-separated), command...
  local what=$1 services=$2; shift 2
  local deadline=$((SECONDS + wait_s)) name
  until "$@" >/dev/null 2>&1; do
    for name in $services; do
      # A service that died will not answer: no point waiting out the deadline.
      running "$name" || { log_tail "$name"; die "$name exited before $what answered; logs are in $state"; }
    done
    [ $SECONDS -lt $deadline ] || { log_tail $services; die "$what did not answer within ${wait_s}s; logs are in $state"; }
    sleep 1
  done
}

# ---------------------------------------------------------------- Kafka (KRaft)
# The SASL_SSL listener's secrets, made once: a CA, a certificate for 127.0.0.1 signed by
# it (in PKCS12 for the broker: its PEM keystore accepts only an encrypted key), and the
# SCRAM user's password. Clients take bootstrap, ca.pem, username and password from $sasl.
make_kafka_tls() {
  local sasl=$1
  mkdir -p "$sasl"
  [ -s "$sasl/password" ] || openssl rand -hex 16 >"$sasl/password"
  [ -s "$sasl/keystore-password" ] || openssl rand -hex 16 >"$sasl/keystore-password"
  chmod 600 "$sasl/password" "$sasl/keystore-password"
  echo hoffrec >"$sasl/username"
  echo "127.0.0.1:$kafka_sasl_ssl_port" >"$sasl/bootstrap"
  if [ -s "$sasl/broker.p12" ] && [ -s "$sasl/ca.pem" ]; then return; fi
  (
    cd "$sasl"
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=hoffrec test CA" \
      -keyout ca.key -out ca.pem \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    # librdkafka checks the broker's address against the certificate: 127.0.0.1 must be in it.
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >broker.ext
    openssl x509 -req -sha256 -days 3650 -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile broker.ext -out broker.pem
    openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
      -passout "pass:$(cat keystore-password)" -out broker.p12
    chmod 600 ca.key broker.key broker.p12
  ) >"$state/kafka-tls.log" 2>&1 || die "making the test CA and broker certificate failed; see $state/kafka-tls.log"
}

start_kafka() {
  local dir="$state/kafka" sasl="$state/kafka/sasl_ssl" cp
  cp=$(classpath kafka)
  mkdir -p "$dir/data"
  local port
  for port in $kafka_port $kafka_controller_port; do
    if ! running kafka && port_busy $port; then
      die "127.0.0.1:$port is taken by a process this script did not start; stop it first."
    fi
  done
  if running kafka && ! port_busy $kafka_sasl_ssl_port; then
    # Started by an up.sh from before the SASL_SSL listener: restarted once to add it.
    echo "up.sh: restarting kafka to add the SASL_SSL listener on 127.0.0.1:$kafka_sasl_ssl_port" >&2
    stop kafka
  fi
  if ! running kafka && port_busy $kafka_sasl_ssl_port; then
    die "127.0.0.1:$kafka_sasl_ssl_port is taken by a process this script did not start; stop it first."
  fi
  if $fresh && ! running kafka; then rm -rf "$dir/data"; mkdir -p "$dir/data"; fi
  make_kafka_tls "$sasl"
  local keystore_password; keystore_password=$(cat "$sasl/keystore-password")
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$kafka_controller_port
listeners=PLAINTEXT://127.0.0.1:$kafka_port,CONTROLLER://127.0.0.1:$kafka_controller_port,SASL_SSL://127.0.0.1:$kafka_sasl_ssl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$kafka_port,SASL_SSL://127.0.0.1:$kafka_sasl_ssl_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$sasl/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=$keystore_password
listener.name.sasl_ssl.ssl.key.password=$keystore_password
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id; id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
    # New storage gets the SCRAM user with its first metadata; storage formatted by an
    # older up.sh gets it from ensure_scram_user once the broker runs.
    java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=$(cat "$sasl/username"),password=$(cat "$sasl/password")]" \
      >"$state/kafka-format.log" 2>&1 \
      || die "formatting Kafka storage failed; see $state/kafka-format.log"
    cp "$sasl/password" "$sasl/password.applied"
  fi
  start kafka -Xms256m -Xmx768m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$cp" kafka.Kafka "$dir/server.properties"
}

kafka_roundtrip() {
  local cp topic="hoffrec.up.probe" token="probe-$$-$RANDOM"
  cp=$(cat "$state/kafka.classpath")
  echo "$token" | java -Dorg.slf4j.simpleLogger.defaultLogLevel=error -cp "$cp" org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server 127.0.0.1:$kafka_port --topic "$topic" >/dev/null 2>&1 || return 1
  java -Dorg.slf4j.simpleLogger.defaultLogLevel=error -cp "$cp" org.apache.kafka.tools.consumer.ConsoleConsumer \
    --bootstrap-server 127.0.0.1:$kafka_port --topic "$topic" --from-beginning --timeout-ms 15000 2>/dev/null \
    | grep -q "$token"
}

# Storage formatted before the SASL_SSL listener existed has no SCRAM user: added (or its
# password changed) through the PLAINTEXT listener, once per password.
ensure_scram_user() {
  local sasl="$state/kafka/sasl_ssl" cp
  if cmp -s "$sasl/password" "$sasl/password.applied"; then return 0; fi
  cp=$(cat "$state/kafka.classpath")
  java -Dorg.slf4j.simpleLogger.defaultLogLevel=error -cp "$cp" kafka.admin.ConfigCommand \
    --bootstrap-server 127.0.0.1:$kafka_port --alter --entity-type users --entity-name "$(cat "$sasl/username")" \
    --add-config "SCRAM-SHA-512=[password=$(cat "$sasl/password")]" >"$state/kafka-scram.log" 2>&1 || return 1
  cp "$sasl/password" "$sasl/password.applied"
}

# Produces one message through the SASL_SSL listener: TLS, the CA and the SCRAM user work.
kafka_sasl_ssl_produce() {
  local sasl="$state/kafka/sasl_ssl" cp
  cp=$(cat "$state/kafka.classpath")
  cat >"$sasl/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="$(cat "$sasl/username")" password="$(cat "$sasl/password")";
ssl.truststore.type=PEM
ssl.truststore.location=$sasl/ca.pem
EOF
  chmod 600 "$sasl/client.properties"
  echo "probe-$$-$RANDOM" | java -Dorg.slf4j.simpleLogger.defaultLogLevel=error -cp "$cp" org.apache.kafka.tools.ConsoleProducer \
    --bootstrap-server 127.0.0.1:$kafka_sasl_ssl_port --producer.config "$sasl/client.properties" \
    --topic hoffrec.up.probe >"$state/kafka-sasl-probe.log" 2>&1
}

# ---------------------------------------------------------------- HDFS
start_hdfs() {
  local dir="$state/hdfs" cp
  cp=$(classpath hdfs)
  # The daemons' HTTP servers look up webapps/<name> on the classpath; the Maven jars ship
  # none, and these tests need no web UI, so empty folders under conf/ satisfy the lookup.
  mkdir -p "$dir/conf" "$dir/name" "$dir/data" \
    "$dir/conf/webapps/hdfs" "$dir/conf/webapps/datanode" "$dir/conf/webapps/secondary" "$dir/conf/webapps/static"
  if ! running namenode && port_busy $hdfs_port; then
    die "127.0.0.1:$hdfs_port is taken by a process this script did not start; stop it first."
  fi
  cat >"$dir/conf/core-site.xml" <<EOF
<?xml version="1.0"?>
<configuration>
  <property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:$hdfs_port</value></property>
  <property><name>hadoop.tmp.dir</name><value>$dir/tmp</value></property>
</configuration>
EOF
  cat >"$dir/conf/hdfs-site.xml" <<EOF
<?xml version="1.0"?>
<configuration>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <property><name>dfs.namenode.name.dir</name><value>file://$dir/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>file://$dir/data</value></property>
  <property><name>dfs.namenode.rpc-bind-host</name><value>127.0.0.1</value></property>
  <property><name>dfs.namenode.http-address</name><value>127.0.0.1:9870</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>127.0.0.1:9868</value></property>
  <property><name>dfs.datanode.address</name><value>127.0.0.1:9866</value></property>
  <property><name>dfs.datanode.http.address</name><value>127.0.0.1:9864</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>127.0.0.1:9867</value></property>
  <property><name>dfs.datanode.hostname</name><value>127.0.0.1</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
  <property><name>dfs.blocksize</name><value>16777216</value></property>
  <property><name>dfs.namenode.datanode.registration.ip-hostname-check</name><value>false</value></property>
</configuration>
EOF
  cat >"$dir/conf/log4j.properties" <<EOF
log4j.rootLogger=WARN,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d %p %c{2}: %m%n
EOF
  # The NameNode's metadata and the DataNode's blocks go together (a DataNode refuses a
  # NameNode of another cluster id), so they are deleted only when neither runs.
  if $fresh && ! running namenode && ! running datanode; then rm -rf "$dir/name" "$dir/data" "$dir/tmp"; mkdir -p "$dir/name" "$dir/data"; fi
  local jcp="$dir/conf:$cp"
  if [ ! -f "$dir/name/current/VERSION" ]; then
    java -cp "$jcp" org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive -force >"$state/namenode-format.log" 2>&1 \
      || die "formatting the NameNode failed; see $state/namenode-format.log"
  fi
  start namenode -Xmx512m -cp "$jcp" org.apache.hadoop.hdfs.server.namenode.NameNode
  start datanode -Xmx384m -cp "$jcp" org.apache.hadoop.hdfs.server.datanode.DataNode
}

hdfs_roundtrip() {
  local dir="$state/hdfs" cp token="probe-$$-$RANDOM" path="/tmp/hoffrec-up-probe"
  cp="$dir/conf:$(cat "$state/hdfs.classpath")"
  echo "$token" | java -cp "$cp" org.apache.hadoop.fs.FsShell -put -f - "$path" >/dev/null 2>&1 || return 1
  java -cp "$cp" org.apache.hadoop.fs.FsShell -cat "$path" 2>/dev/null | grep -q "$token"
}

start_kafka
start_hdfs
wait_for "Kafka on 127.0.0.1:$kafka_port (produce + consume)" kafka kafka_roundtrip
wait_for "the Kafka SCRAM user (kafka-configs through 127.0.0.1:$kafka_port; see $state/kafka-scram.log)" kafka ensure_scram_user
wait_for "Kafka SASL_SSL on 127.0.0.1:$kafka_sasl_ssl_port (produce with SCRAM-SHA-512; see $state/kafka-sasl-probe.log)" kafka kafka_sasl_ssl_produce
wait_for "HDFS on hdfs://127.0.0.1:$hdfs_port (write + read)" "namenode datanode" hdfs_roundtrip

# Delta jars for the Spark checks, resolved now so tests find them offline.
classpath spark >/dev/null
# Apache Avro for the Java consumer snippet (tests/consumers/).
classpath avro >/dev/null
echo "KAFKA_BOOTSTRAP=127.0.0.1:$kafka_port"
echo "HDFS_URL=hdfs://127.0.0.1:$hdfs_port"
# The SASL_SSL listener and its credentials; tests/it/kafka_broker.rs reads the same files.
echo "KAFKA_SASL_SSL_BOOTSTRAP=127.0.0.1:$kafka_sasl_ssl_port"
echo "KAFKA_SASL_SSL_CA=$state/kafka/sasl_ssl/ca.pem"
echo "KAFKA_SASL_USERNAME=$(cat "$state/kafka/sasl_ssl/username")"
echo "KAFKA_SASL_PASSWORD_FILE=$state/kafka/sasl_ssl/password"
echo "HOFFREC_SERVICES_DIR=$state"
