# tierflow developer recipes. `just` alone runs the full local check.

# Format check, lints as errors, then every test (installs test services on first use).
default: fmt clippy test

# Check formatting.
fmt:
    cargo fmt --all -- --check

# Lints, warnings as errors.
clippy:
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Every test, exactly as CI runs it (the README's test command).
test *ARGS:
    bash tests/run.sh {{ARGS}}

# The demo on embedded defaults (the README's demo command).
demo *ARGS:
    cargo run -p tierflow -- demo {{ARGS}}

# Benchmarks (criterion); results and setups are recorded in BENCHMARKS.md.
bench:
    cargo bench --workspace

# Regenerate schemas/ from the Rust types (review the diff before committing).
schemas:
    cargo run -p tierflow -- schemas --dir schemas

# Start a local broker (tansu, SQLite storage) and redis-server on ports 19092 / 16379.
services-up:
    deploy/local/services.sh start

# Stop them.
services-down:
    deploy/local/services.sh stop

# Show whether they run.
services-status:
    deploy/local/services.sh status

# Retrain the committed default model (embedded in the binary) from the synthetic generator.
default-model:
    cargo run -p tierflow -- generate --users 5000 --days 90 --seed 42 -o target/default-model-events.jsonl.gz
    cargo run -p tierflow -- train --events target/default-model-events.jsonl.gz \
        --cutoff 2026-01-31T00:00:00Z --cutoff 2026-02-15T00:00:00Z --cutoff 2026-03-02T00:00:00Z \
        --horizon-days 30 --source "synthetic(users=5000, days=90, seed=42)" \
        -o crates/tierflow-model/default-model

# Fuzz the clickstream decoder and the rules-file parser (cargo-fuzz, libFuzzer) for SECS
# seconds each, from the committed seeds (crates/tierflow-fuzz/seeds); fails on the first crash,
# kept in crates/tierflow-fuzz/artifacts. Stable toolchain: RUSTC_BOOTSTRAP lets it take the
# -Z flags cargo-fuzz passes; no sanitizer, the code under test has no unsafe.
fuzz SECS="60":
    #!/usr/bin/env bash
    set -euo pipefail
    export PATH="$HOME/.cache/tierflow/bin:$PATH" RUSTC_BOOTSTRAP=1
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --root "$HOME/.cache/tierflow"
    for target in click_record rules_file; do
        mkdir -p "target/fuzz-corpus/$target"
        cargo fuzz run --fuzz-dir crates/tierflow-fuzz --sanitizer none "$target" \
            "target/fuzz-corpus/$target" "crates/tierflow-fuzz/seeds/$target" -- -max_total_time={{SECS}}
    done

# End-to-end pipeline benchmark (issue 5; not a test): tierflow-loadgen against a broker and a
# redis-server you started for it — a tansu with memory storage is the fast one, e.g.
# `tansu broker --listener-url tcp://127.0.0.1:29092 --advertised-listener-url tcp://127.0.0.1:29092 --storage-engine memory://tansu/`
# and `redis-server --port 26379 --save "" --appendonly no` — or BROKERS=embedded (librdkafka's
# mock cluster). Prints one JSON line per run; BENCHMARKS.md "Pipeline end to end" has the setup.
bench-pipeline BROKERS="127.0.0.1:29092" REDIS="redis://127.0.0.1:26379/":
    cargo build --release -p tierflow-loadgen
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode consume-only --rate 0 --max-events 1000000
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --mode redis-only --memory-users 1000000 --duration-secs 20
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode pipeline --rate 0 --max-events 1000000 --users 1000000
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode pipeline --rate 5000 --duration-secs 30 --users 1000000
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode pipeline --rate 10000 --duration-secs 30 --users 1000000
    ./target/release/tierflow-loadgen --json --quiet --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode pipeline --rate 20000 --duration-secs 30 --users 1000000

# Soak (issue 8; not a test): RATE events/s for MINUTES minutes through the in-process pipeline,
# sampled every 10 s — offered/processed rates, lag, this process's RSS (the pipeline runs in
# it), Redis used_memory, the broker's RSS if TIERFLOW_LOADGEN_BROKER_PID is set, p50/p99 — into
# target/soak/*.csv, a plot beside it (*.svg) and a JSON line with a `soak` summary (*.json).
# The broker is librdkafka's in-process mock cluster by default (BROKERS=embedded): it keeps at
# most 5 MB per partition, so it stays flat, unlike tansu 0.6.0's memory storage (fetch cost
# grows with every stored batch) and sqlite storage (~100 events/s here) — BENCHMARKS.md
# "Soak (issue 8)". Its memory is then part of this process's RSS. Start the private Redis by
# hand on a quiet machine:
#   redis-server --port 26379 --bind 127.0.0.1 --save "" --appendonly no --daemonize yes
# For an external broker pass BROKERS=host:port (and TIERFLOW_LOADGEN_BROKER_PID for its RSS).
# RATE 10000 = half the most a live run sustained on the embedded broker on this 2-core
# machine (~20k events/s offered 24k, BENCHMARKS.md "Soak (issue 8)").
soak RATE="10000" MINUTES="30" BROKERS="embedded" REDIS="redis://127.0.0.1:26379/":
    cargo build --release -p tierflow-loadgen
    mkdir -p target/soak
    ./target/release/tierflow-loadgen --json --brokers {{BROKERS}} --redis {{REDIS}} --kafka-property fetch.wait.max.ms=10 --mode pipeline --rate {{RATE}} --duration-secs $(( {{MINUTES}} * 60 )) --max-events $(( {{RATE}} * {{MINUTES}} * 60 )) --users 1000000 --sample-secs 10 --series target/soak/soak-{{RATE}}-{{MINUTES}}min.csv > target/soak/soak-{{RATE}}-{{MINUTES}}min.json
    cat target/soak/soak-{{RATE}}-{{MINUTES}}min.json
