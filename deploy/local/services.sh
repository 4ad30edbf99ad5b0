#!/usr/bin/env bash
# Starts, stops or shows a local Kafka-protocol broker (tansu) and redis-server for trying
# tierflow against real services by hand: `deploy/local/services.sh start|stop|status`.
#
# Ports: broker 127.0.0.1:${TIERFLOW_LOCAL_KAFKA_PORT:-19092}, redis ${TIERFLOW_LOCAL_REDIS_PORT:-16379}
# (not the defaults, so they never collide with services the machine already runs).
# The broker keeps its data in SQLite under ~/.cache/tierflow/local, so it survives restarts.
# Install the binaries first with `bash tests/run.sh` (or set TIERFLOW_TANSU / TIERFLOW_REDIS_SERVER).
set -euo pipefail

TOOLS="${TIERFLOW_TOOLS:-$HOME/.cache/tierflow}"
RUN="$TOOLS/local"
KAFKA_PORT="${TIERFLOW_LOCAL_KAFKA_PORT:-19092}"
REDIS_PORT="${TIERFLOW_LOCAL_REDIS_PORT:-16379}"
TANSU="${TIERFLOW_TANSU:-$TOOLS/bin/tansu}"
REDIS="${TIERFLOW_REDIS_SERVER:-$(command -v redis-server || true)}"
mkdir -p "$RUN"

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {
  [ -x "$TANSU" ] || { echo "tansu not found at $TANSU: run 'bash tests/run.sh' once to install it" >&2; exit 1; }
  [ -n "$REDIS" ] || { echo "redis-server not found" >&2; exit 1; }
  if ! running tansu; then
    (cd "$RUN" && nohup "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine sqlite://tansu/ >"$RUN/tansu.log" 2>&1 & echo $! >"$RUN/tansu.pid")
  fi
  if ! running redis; then
    "$REDIS" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$RUN" \
      --daemonize yes --pidfile "$RUN/redis.pid" --logfile "$RUN/redis.log"
  fi
  status
  echo "try: cargo run -p tierflow -- --brokers 127.0.0.1:$KAFKA_PORT generate --users 100 --topic"
}

stop() {
  for name in tansu redis; do
    if running "$name"; then kill "$(cat "$RUN/$name.pid")"; fi
    rm -f "$RUN/$name.pid"
  done
  status
}

status() {
  for name in tansu redis; do
    if running "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
  echo "kafka: 127.0.0.1:$KAFKA_PORT  redis: redis://127.0.0.1:$REDIS_PORT/  logs: $RUN"
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
