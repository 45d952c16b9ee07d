#!/usr/bin/env bash
# A real Kafka-protocol broker on 127.0.0.1 for persona's tests and examples:
# the tansu broker (Apache-2.0, from crates.io) with its SQLite storage engine.
#
#   scripts/kafka-broker.sh start    install tansu if missing, start it, print the bootstrap address
#   scripts/kafka-broker.sh stop     stop it
#   scripts/kafka-broker.sh status   print the address if it is running, else fail
#
# PERSONA_KAFKA_PORT (default 19092) and PERSONA_KAFKA_DIR (default target/kafka)
# choose the port and the folder of its data, log and pid file;
# PERSONA_KAFKA_MAINTENANCE (default 1day) how often it compacts topics and
# applies retention.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
port=${PERSONA_KAFKA_PORT:-19092}
dir=${PERSONA_KAFKA_DIR:-$root/target/kafka}
address="127.0.0.1:$port"
pidfile="$dir/tansu.pid"
tansu_version=0.6.0
maintenance=${PERSONA_KAFKA_MAINTENANCE:-1day}

running() {
    [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

install() {
    export PATH="$HOME/.cargo/bin:$PATH"
    if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$tansu_version"; then
        return
    fi
    echo "installing the tansu broker $tansu_version (a one-time build of 15 to 30 minutes)..." >&2
    # The in-memory engine loses records when a fetch starts inside a batch;
    # the SQLite engine keeps offsets and survives restarts.
    cargo install tansu --version "$tansu_version" --locked \
        --no-default-features --features libsql >&2
}

case "${1:-}" in
start)
    install
    mkdir -p "$dir"
    if ! running; then
        # tansu reads the SQLite path relative to its working folder. Its
        # maintenance (retention and compaction) runs at start and then every
        # $maintenance: each pass scans every record of the database under
        # SQLite's write lock, which on a test broker holding millions of
        # records stalls every request for over a minute (produce, metadata,
        # offset commits all time out), so it runs rarely here.
        (cd "$dir" && PATH="$HOME/.cargo/bin:$PATH" exec nohup tansu broker \
            --listener-url "tcp://$address" \
            --advertised-listener-url "tcp://$address" \
            --storage-engine "sqlite://tansu.db?maintenance_interval=$maintenance" \
            >>"$dir/tansu.log" 2>&1 </dev/null) &
        echo $! >"$pidfile"
    fi
    for _ in $(seq 1 100); do
        if listening; then
            echo "$address"
            exit 0
        fi
        running || break
        sleep 0.2
    done
    echo "the broker did not start; its log is $dir/tansu.log:" >&2
    tail -n 20 "$dir/tansu.log" >&2 || true
    exit 1
    ;;
stop)
    if running; then
        kill "$(cat "$pidfile")"
        for _ in $(seq 1 50); do running || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
    ;;
status)
    running && listening && echo "$address"
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
