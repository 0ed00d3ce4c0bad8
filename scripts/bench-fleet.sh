#!/usr/bin/env bash
# Fleet-scale benchmark: one Vigil verifier (or Keylime 7.14.3's) polling N nodes
# simulated by vigil-sim on loopback, every stage bounded in time.
#
#   scripts/bench-fleet.sh --nodes N --duration SECONDS   one capacity point; the last line is
#       nodes N attestations/s X p99-lag-ms Y cpu-per-attestation-ms Z rss-per-node-kib W
#   scripts/bench-fleet.sh --sweep "100 1000 3000"        one point per count (Vigil)
#   scripts/bench-fleet.sh --keylime --nodes N ...        the same point against Keylime's verifier
#   scripts/bench-fleet.sh --failover --nodes N           3 replicas on PostgreSQL, one SIGKILLed
#   scripts/bench-fleet.sh --all                          sweep, Keylime, failover, plots,
#                                                         figures into docs/benchmarks.md
#
# Options: --interval S (quote_interval, default 2), --warmup S (seconds after enrolment
# before the window opens, default 10), --ima-rate R (new IMA entries per node per second,
# default 1), --no-keep-alive (the verifier opens a connection per round), --release /
# --debug (which build; default release), --port P (the simulator's port).
#
# The verifier runs with measured boot (`example` policy, the UEFI log's reference state)
# and IMA (one shared runtime policy), SQLite unless --failover. The simulator reports
# what it saw from the nodes' side (poll lag = time between two quote requests to a node
# minus the interval); CPU per attestation is the verifier process's user+system time
# (/proc/PID/stat) over the window divided by the attestations in it; memory per node is
# the verifier's RSS growth from before enrolment to the end of the window, per node.
# Figures depend on the machine and its load: the script prints `uptime` with each point.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

nodes=1000
duration=30
interval=2
warmup=10
ima_rate=1
keep_alive=true
profile=release
port=29100
mode=point
sweep=""
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) nodes=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --interval) interval=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --ima-rate) ima_rate=$2; shift 2 ;;
        --no-keep-alive) keep_alive=false; shift ;;
        --debug) profile=debug; shift ;;
        --release) profile=release; shift ;;
        --port) port=$2; shift 2 ;;
        --sweep) mode=sweep; sweep=$2; shift 2 ;;
        --keylime) mode=keylime; shift ;;
        --failover) mode=failover; shift ;;
        --all) mode=all; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ "$profile" = release ]; then
    cargo build --release -p vigil-sim -p vigil-verifier -p vigil-registrar -p vigil-cli >&2
    bin=$root/target/release
else
    cargo build -p vigil-sim -p vigil-verifier -p vigil-registrar -p vigil-cli >&2
    bin=$root/target/debug
fi
[ -n "${CARGO_TARGET_DIR:-}" ] && bin=$CARGO_TARGET_DIR/$profile

work=$root/.work/bench-fleet
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT INT TERM

# CPU seconds (user+system) of a process.
cpu_of() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
# Resident set in KiB.
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# Waits (at most $3 s) until file $1 contains $2.
wait_for() {
    local deadline=$((SECONDS + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for '$2' in $1" >&2; tail -20 "$1" >&2; return 1; }
        sleep 0.2
    done
}

# A fresh CA, registrar and Vigil verifier in $work/$1 (database URL $2, extra config $3).
start_vigil() {
    local d=$work/$1 db=$2 extra=${3:-}
    rm -rf "$d" && mkdir -p "$d"
    "$bin/vigil" ca init --dir "$d/cv_ca" >/dev/null
    cat > "$d/registrar.toml" <<EOF
port = $((port + 1))
tls_port = $((port + 2))
state_dir = "$d"
database_url = "sqlite://$d/reg.db?mode=rwc"
tls_dir = "$d/cv_ca"
log = "warn"
EOF
    cat > "$d/verifier.toml" <<EOF
port = $((port + 3))
state_dir = "$d"
database_url = "$db"
tls_dir = "$d/cv_ca"
quote_interval = $interval
measured_boot_policy_name = "example"
agent_keep_alive = $keep_alive
log = "warn"
$extra
EOF
    "$bin/vigil-registrar" --config "$d/registrar.toml" > "$d/registrar.log" 2>&1 &
    pids+=($!)
    "$bin/vigil-verifier" --config "$d/verifier.toml" > "$d/verifier.log" 2>&1 &
    verifier_pid=$!
    pids+=($verifier_pid)
    sleep 2
}

# One capacity point against the verifier of $work/$1 (pid $verifier_pid): prints the
# summary line; the simulator's report is in $work/$1/sim.json.
measure() {
    local d=$work/$1 vpid=$verifier_pid
    local rss0 cpu0 cpu1 rss1 total=$((warmup + duration))
    rss0=$(rss_of "$vpid")
    "$bin/vigil-sim" --nodes "$nodes" --port "$port" --verifier-ca "$d/cv_ca/cacert.crt" \
        --registrar "http://127.0.0.1:$((port + 1))" --verifier "https://127.0.0.1:$((port + 3))" \
        --verifier-tls-dir "$d/cv_ca" --interval "$interval" --ima-rate "$ima_rate" \
        --duration "$total" --measure-after "$warmup" --report "$d/sim.json" \
        --events "$d/events.csv" > "$d/sim.out" 2> "$d/sim.log" &
    local spid=$!
    pids+=($spid)
    wait_for "$d/sim.log" "serving (ready)" $((120 + nodes / 20))
    sleep "$warmup"
    cpu0=$(cpu_of "$vpid")
    sleep "$duration"
    cpu1=$(cpu_of "$vpid")
    rss1=$(rss_of "$vpid")
    wait "$spid"
    python3 - "$d/sim.json" "$nodes" "$cpu0" "$cpu1" "$rss0" "$rss1" "$duration" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
nodes, cpu0, cpu1, rss0, rss1, dur = int(sys.argv[2]), *map(float, sys.argv[3:7]), float(sys.argv[7])
quotes = r["quotes"] or 1
cpu_ms = (cpu1 - cpu0) * 1000 / (r["quotes_per_s"] * dur or 1)
print("nodes %d attestations/s %.1f p99-lag-ms %d cpu-per-attestation-ms %.3f rss-per-node-kib %.1f"
      % (nodes, r["quotes_per_s"], r["lag_ms"]["p99"], cpu_ms, (rss1 - rss0) / nodes))
PY
}

point() {
    echo "# $(date -u +%FT%TZ) vigil nodes=$nodes interval=$interval keep_alive=$keep_alive profile=$profile; load: $(uptime)" >&2
    start_vigil point "sqlite://$work/point/cv.db?mode=rwc"
    measure point
    cleanup
}

case "$mode" in
    point) point ;;
    sweep)
        for n in $sweep; do nodes=$n; point; done ;;
    *) echo "--$mode: not implemented yet" >&2; exit 2 ;;
esac
