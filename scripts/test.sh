#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit, oracle, property, golden and
# end-to-end tests, in release mode (the golden tests replay real logs).
# Extra arguments go to cargo nextest (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --release --no-fail-fast "$@"
