#!/usr/bin/env bash
# The whole test suite, as CI runs it: unit, oracle, property, golden and
# end-to-end tests, in release mode (the golden tests replay real logs).
# Extra arguments go to cargo nextest (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
fi

# tests/kafka.rs needs a real broker: start one unless PERSONA_KAFKA_BROKERS
# names one, and stop it on exit if this script started it. It is the tests'
# own, on an empty database and a port of its own: the broker compacts its
# topics when it starts, and on the millions of records an earlier run left
# that stalls every request for over a minute.
if [[ -z "${PERSONA_KAFKA_BROKERS:-}" ]]; then
    export PERSONA_KAFKA_PORT=${PERSONA_KAFKA_TEST_PORT:-19093}
    export PERSONA_KAFKA_DIR=$PWD/target/kafka-test
    scripts/kafka-broker.sh stop
    rm -rf "$PERSONA_KAFKA_DIR"
    PERSONA_KAFKA_BROKERS=$(scripts/kafka-broker.sh start)
    export PERSONA_KAFKA_BROKERS
    trap 'scripts/kafka-broker.sh stop' EXIT
fi

cargo nextest run --workspace --release --no-fail-fast "$@"
