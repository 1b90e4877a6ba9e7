#!/usr/bin/env bash
# Stops exactly the processes tests/services/up.sh started (by their pid files, checked
# against their command line), politely first, then by force. Data stays in the state
# directory; pass --wipe to delete it too, or --only NAME to stop just that service.
set -uo pipefail

state=${HOFFREC_SERVICES_DIR:-$HOME/.cache/hoffrec/services}
wipe=false
only="datanode namenode kafka"
case "${1:-}" in
  --wipe) wipe=true ;;
  --only) only=${2:?"down.sh --only kafka|namenode|datanode"} ;;
esac

ours() { kill -0 "$1" 2>/dev/null && grep -qa "hoffrec-service=$2" "/proc/$1/cmdline" 2>/dev/null; }

# DataNode before NameNode, so the DataNode does not spin on a vanished NameNode.
# `--only NAME` stops one service (the restart tests start it again with up.sh).
for name in $only; do
  pidfile="$state/$name.pid"
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if ours "$pid" "$name"; then
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 30); do ours "$pid" "$name" || break; sleep 1; done
    if ours "$pid" "$name"; then kill -9 "$pid" 2>/dev/null; echo "down.sh: $name (pid $pid) killed" >&2
    else echo "down.sh: $name (pid $pid) stopped" >&2; fi
  fi
  rm -f "$pidfile"
done

if $wipe; then rm -rf "$state"; echo "down.sh: removed $state" >&2; fi
