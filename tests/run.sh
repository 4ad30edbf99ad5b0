#!/usr/bin/env bash
# Runs every tierflow test on a machine that has only the Rust toolchain.
#
# Installs what the tests need, once and idempotently, then runs the whole workspace's tests:
#   - redis-server: Debian's package (apt-get), unless one is already on PATH;
#   - chromium (headless, for the live view's browser test): Debian's package (apt-get), unless
#     `chromium` is on PATH or TIERFLOW_CHROMIUM names one; no browser downloads from elsewhere;
#   - tansu 0.6.0, a Kafka-protocol broker: `cargo install` into ~/.cache/tierflow (about 13
#     minutes on 2 cores, the first time only).
# Tests start their own private redis-server and broker on free loopback ports; nothing here
# starts a service. Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
TOOLS="${TIERFLOW_TOOLS:-$HOME/.cache/tierflow}"
TANSU_VERSION="0.6.0"
mkdir -p "$TOOLS/bin"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"

die() { echo "tests/run.sh: $*" >&2; exit 1; }
say() { echo "tests/run.sh: $*" >&2; }

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs) first."

ensure_redis() {
  if command -v redis-server >/dev/null; then return; fi
  command -v apt-get >/dev/null || die "redis-server is missing and apt-get is not available: install Redis (redis-server on PATH) or set TIERFLOW_REDIS_SERVER."
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "redis-server is missing; installing it needs root (no sudo found)."
    sudo="sudo"
  fi
  say "installing redis-server (Debian package)"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed; install redis-server by hand."
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null \
    || die "apt-get install redis-server failed; install it by hand or set TIERFLOW_REDIS_SERVER."
  command -v redis-server >/dev/null || die "redis-server still not on PATH after installing."
}

ensure_chromium() {
  if [ -n "${TIERFLOW_CHROMIUM:-}" ] || command -v chromium >/dev/null; then return; fi
  command -v apt-get >/dev/null || die "chromium is missing and apt-get is not available: install Chromium (chromium on PATH) or set TIERFLOW_CHROMIUM."
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "chromium is missing; installing it needs root (no sudo found)."
    sudo="sudo"
  fi
  say "installing chromium (Debian package, for the live view's headless browser test)"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed; install chromium by hand."
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null \
    || die "apt-get install chromium failed; install it by hand or set TIERFLOW_CHROMIUM."
  command -v chromium >/dev/null || die "chromium still not on PATH after installing."
}

ensure_tansu() {
  if [ -x "$TOOLS/bin/tansu" ] && "$TOOLS/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return
  fi
  # One installer at a time, even when several test runs start together.
  exec 9>"$TOOLS/tansu.lock"
  flock 9
  if [ ! -x "$TOOLS/bin/tansu" ] || ! "$TOOLS/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    say "installing tansu $TANSU_VERSION into $TOOLS (first run only; about 13 minutes on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
      --root "$TOOLS" >"$TOOLS/tansu-install.log" 2>&1 \
      || { tail -n 30 "$TOOLS/tansu-install.log" >&2; die "cargo install tansu failed (log: $TOOLS/tansu-install.log)."; }
  fi
  flock -u 9
}

ensure_redis
ensure_chromium
ensure_tansu
# The real public data sets (importer tests) live in the shared folder beside the checkout;
# a clone elsewhere finds them at the workplace's fixed location.
if [ -z "${TIERFLOW_DATA_DIR:-}" ]; then
  for dir in "$PWD/../shared/data" /work/shared/data; do
    if [ -f "$dir/online_retail.csv.gz" ]; then export TIERFLOW_DATA_DIR="$dir"; break; fi
  done
fi
[ -n "${TIERFLOW_DATA_DIR:-}" ] || say "warning: real data sets not found (set TIERFLOW_DATA_DIR); the importer tests will say so"
export TIERFLOW_REDIS_SERVER="${TIERFLOW_REDIS_SERVER:-$(command -v redis-server)}"
export TIERFLOW_TANSU="${TIERFLOW_TANSU:-$TOOLS/bin/tansu}"
say "redis-server: $TIERFLOW_REDIS_SERVER; tansu: $TIERFLOW_TANSU; data: ${TIERFLOW_DATA_DIR:-none}"

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  exec cargo test --workspace --locked --no-fail-fast "$@"
fi
