#!/usr/bin/env bash
# Starts a three-node zctl cluster on loopback in a temporary directory,
# waits until every node is a voter, prints the member list and stops the
# nodes again on exit (Ctrl-C included).
#
# Usage: examples/three-node.sh [--keep-running]
#
#   ZCTL=/path/to/zctl   the binary to run (default: zctl from PATH)
#   ZCTL_BASE_PORT=N     ports used: N+1..N+3 mesh, N+11..N+13 raft,
#                        N+21..N+23 admin API (default: the first of 17100,
#                        17200, ... 18000 whose ports nothing listens on)
#
# With --keep-running the script waits (Ctrl-C to stop) so the cluster can be
# explored with zctl cluster list --node URL, using the URLs it prints.

set -euo pipefail

zctl=${ZCTL:-zctl}
keep_running=false
case ${1-} in
    --keep-running) keep_running=true ;;
    '') ;;
    *) echo "usage: $0 [--keep-running]" >&2; exit 2 ;;
esac

if ! command -v "$zctl" >/dev/null 2>&1; then
    echo "$0: cannot find '$zctl'; put zctl on PATH or set ZCTL=/path/to/zctl" >&2
    exit 2
fi

# in_use PORT: something listens on 127.0.0.1:PORT.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# base_free N: none of the nine ports of base N is in use.
base_free() {
    local offset
    for offset in 1 2 3 11 12 13 21 22 23; do
        if in_use $(($1 + offset)); then
            return 1
        fi
    done
}

base=${ZCTL_BASE_PORT-}
if [[ -z $base ]]; then
    for candidate in $(seq 17100 100 18000); do
        if base_free "$candidate"; then
            base=$candidate
            break
        fi
    done
    if [[ -z $base ]]; then
        echo "$0: no free ports between 17101 and 18023; set ZCTL_BASE_PORT" >&2
        exit 1
    fi
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/zctl-three-node.XXXXXX")
pids=()

stop_nodes() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap stop_nodes EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mesh() { echo "127.0.0.1:$((base + $1))"; }
raft() { echo "127.0.0.1:$((base + 10 + $1))"; }
admin() { echo "127.0.0.1:$((base + 20 + $1))"; }

# start N ARGS...: node ctrlN in the background, its output in $dir/ctrlN.log.
start() {
    local n=$1
    shift
    "$zctl" serve --id "ctrl$n" --data-dir "$dir/ctrl$n" \
        --mesh "$(mesh "$n")" --raft "$(raft "$n")" --admin "$(admin "$n")" "$@" \
        >"$dir/ctrl$n.log" 2>&1 &
    pids+=($!)
}

# voters N: how many voters node ctrlN lists (0 while it cannot answer).
voters() {
    "$zctl" cluster list -o json --node "http://$(admin "$1")" 2>/dev/null |
        grep -o '"voter":true' | wc -l || true
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
    local what=$1 seconds=$2 i
    shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        if "$@"; then
            return 0
        fi
        local pid
        for pid in "${pids[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                echo "$0: a node exited while waiting for $what; its log:" >&2
                tail -n 20 "$dir"/ctrl*.log >&2
                exit 1
            fi
        done
        sleep 0.2
    done
    echo "$0: timed out waiting for $what; the node logs:" >&2
    tail -n 20 "$dir"/ctrl*.log >&2
    exit 1
}

three_voters() { [[ $(voters "$1") -eq 3 ]]; }
one_voter() { [[ $(voters 1) -ge 1 ]]; }

echo "data and logs in $dir"
start 1 --bootstrap
wait_for "ctrl1 to start the cluster" 20 one_voter
start 2 --join "$(mesh 1)"
start 3 --join "$(mesh 1)"
for n in 1 2 3; do
    wait_for "ctrl$n to list three voters" 30 three_voters "$n"
done

"$zctl" cluster list -o table --node "http://$(admin 1)"

if $keep_running; then
    echo
    echo "admin APIs: http://$(admin 1) http://$(admin 2) http://$(admin 3); Ctrl-C stops the nodes"
    wait
fi
