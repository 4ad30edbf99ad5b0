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
