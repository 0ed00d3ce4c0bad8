#!/usr/bin/env bash
# Fleet-scale benchmark: one Vigil verifier (or Keylime 7.14.3's) polling N nodes
# simulated by vigil-sim on loopback, every stage bounded in time.
#
#   scripts/bench-fleet.sh --nodes N --duration SECONDS   one capacity point; the last line is
#       nodes N attestations/s X p99-lag-ms Y cpu-per-attestation-ms Z rss-per-node-kib W
#   scripts/bench-fleet.sh --sweep "100 1000 3000"        one point per count (Vigil)
#   scripts/bench-fleet.sh --keylime --nodes N ...        the same point against Keylime's verifier
#   scripts/bench-fleet.sh --failover --nodes N           3 replicas on PostgreSQL, one SIGKILLed
#   scripts/bench-fleet.sh --replicas "1 2 3" --nodes N   throughput of 1, 2, 3 replicas on one
#                                                         PostgreSQL, the same nodes
#   scripts/bench-fleet.sh --rebalance --nodes N          one replica with N nodes, a second joins:
#                                                         time to an even split, gaps, doubles
#   scripts/bench-fleet.sh --all                          sweep, Keylime, replicas, rebalance,
#                                                         failover, plots, figures into
#                                                         docs/benchmarks.md
#
# Options: --interval S (quote_interval, default 2), --warmup S (seconds after enrolment
# before the window opens, default 10), --ima-rate R (new IMA entries per node per second,
# default 1), --no-keep-alive (the verifier opens a connection per round), --release /
# --debug (which build; default release), --port P (the simulator's port), --no-build
# (use the binaries as they are), --lease-ttl S (replicas' lease_ttl, default 3).
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
build=true
replica_counts="1 2 3"
lease_ttl=3
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
        --no-build) build=false; shift ;;
        --sweep) mode=sweep; sweep=$2; shift 2 ;;
        --keylime) mode=keylime; shift ;;
        --failover) mode=failover; shift ;;
        --replicas) mode=replicas; replica_counts=$2; shift 2 ;;
        --rebalance) mode=rebalance; shift ;;
        --lease-ttl) lease_ttl=$2; shift 2 ;;
        --all) mode=all; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

bin=${CARGO_TARGET_DIR:-$root/target}/$profile
if $build; then
    flag=; [ "$profile" = release ] && flag=--release
    cargo build $flag -p vigil-sim -p vigil-verifier -p vigil-registrar -p vigil-cli >&2
fi
# `vigil ca init` only: any build will do (VIGIL_CLI overrides).
vigil_cli=${VIGIL_CLI:-$bin/vigil}

work=$root/.work/bench-fleet
mkdir -p "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
    "$vigil_cli" ca init --dir "$d/cv_ca" >/dev/null
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

pg=${VIGIL_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

# A fresh PostgreSQL schema, CA, registrar and replica r1 in $work/$1 (lease_ttl
# $lease_ttl), then replicas r2..r$2 with the same configuration: $vpids, $schema.
start_replicas() {
    local d=$work/$1 count=$2 r
    schema=bench_fleet_$$_$1
    PGOPTIONS=--client-min-messages=warning psql -q "$pg" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null
    start_vigil "$1" "$pg?options[search_path]=$schema" "replica_id = \"r1\"
lease_ttl = $lease_ttl"
    vpids=($verifier_pid)
    for r in $(seq 2 "$count"); do start_replica "$d" "$r"; done
    [ "$count" -gt 1 ] && sleep 2
    return 0
}

# Replica r$2 of the verifier in $1 (r1's configuration, its own port): appended to
# $vpids.
start_replica() {
    local d=$1 r=$2
    sed -e "s/^port = .*/port = $((port + 3 + r))/" -e "s/replica_id = \"r1\"/replica_id = \"r$r\"/" \
        "$d/verifier.toml" > "$d/verifier$r.toml"
    "$bin/vigil-verifier" --config "$d/verifier$r.toml" > "$d/verifier$r.log" 2>&1 &
    pids+=($!); vpids+=($!)
}

drop_schema() {
    PGOPTIONS=--client-min-messages=warning psql -q "$pg" -c "DROP SCHEMA $schema CASCADE" >/dev/null
}

# CPU seconds of every replica in $vpids.
replicas_cpu() {
    local p sum=0
    for p in "${vpids[@]}"; do sum=$(echo "$sum + $(cpu_of "$p")" | bc); done
    echo "$sum"
}

# The simulator against the replicas of $work/$1, enrolling through r1, for warm-up +
# duration seconds (extra arguments passed on); returns once it serves. Its pid: $spid.
start_sim() {
    local d=$work/$1; shift
    "$bin/vigil-sim" --nodes "$nodes" --port "$port" --verifier-ca "$d/cv_ca/cacert.crt" \
        --verifier "https://127.0.0.1:$((port + 3))" --verifier-tls-dir "$d/cv_ca" \
        --interval "$interval" --ima-rate "$ima_rate" --duration $((warmup + duration)) \
        --report "$d/sim.json" --events "$d/events.csv" "$@" > "$d/sim.out" 2> "$d/sim.log" &
    spid=$!
    pids+=($spid)
    wait_for "$d/sim.log" "serving (ready)" $((120 + nodes / 20))
}

# $1 replicas on one PostgreSQL (lease_ttl $lease_ttl) sharing $nodes nodes enrolled
# through the first: throughput, p99 lag (the simulator's, over the window), CPU per
# attestation summed over the replicas (PostgreSQL's own not counted), doubles.
replicas_point() {
    local count=$1 name=replicas$1 d=$work/replicas$1
    echo "# $(date -u +%FT%TZ) replicas=$count nodes=$nodes interval=$interval lease_ttl=$lease_ttl profile=$profile; load: $(uptime)" >&2
    start_replicas "$name" "$count"
    start_sim "$name" --measure-after "$warmup"
    sleep "$warmup"
    local cpu0 cpu1
    cpu0=$(replicas_cpu)
    sleep "$duration"
    cpu1=$(replicas_cpu)
    wait "$spid"
    drop_schema
    python3 - "$d/sim.json" "$nodes" "$count" "$cpu0" "$cpu1" "$duration" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
nodes, count, cpu0, cpu1, dur = int(sys.argv[2]), int(sys.argv[3]), *map(float, sys.argv[4:7])
cpu_ms = (cpu1 - cpu0) * 1000 / (r["quotes_per_s"] * dur or 1)
print("replicas %d nodes %d attestations/s %.1f p99-lag-ms %d cpu-per-attestation-ms %.3f doubles %d"
      % (count, nodes, r["quotes_per_s"], r["lag_ms"]["p99"], cpu_ms, r["doubles"]))
PY
    cleanup
}

# One replica attesting $nodes nodes; after the warm-up a second joins. The leases each
# holds are sampled from the database every half second; from the nodes' side: the
# largest gap between two polls of a node after the join and double attestations.
# Prints the time from the join to an even split (neither replica above its share
# ceil(N/2) plus the 5 % slack), the final split, the gaps and the doubles.
rebalance() {
    local d=$work/rebalance
    echo "# $(date -u +%FT%TZ) rebalance nodes=$nodes interval=$interval lease_ttl=$lease_ttl profile=$profile; load: $(uptime)" >&2
    start_replicas rebalance 1
    start_sim rebalance
    sleep "$warmup"
    local t_join
    t_join=$(date +%s%3N)
    start_replica "$d" 2
    local end=$((SECONDS + duration))
    : > "$d/holders.csv"
    while [ $SECONDS -lt $end ] && kill -0 "$spid" 2>/dev/null; do
        psql -At -F, "$pg" -c "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint, holder, count(*)
            FROM $schema.agent_leases WHERE expires_at > extract(epoch from now()) GROUP BY holder" \
            >> "$d/holders.csv"
        sleep 0.5
    done
    wait "$spid"
    drop_schema
    python3 - "$d" "$t_join" "$interval" "$nodes" <<'PY'
import csv, json, sys, math
d, t_join, interval, nodes = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
r = json.load(open(d + "/sim.json"))
join = t_join - r["started_unix_ms"]
share = math.ceil(nodes / 2)
even_at, last = None, {}
samples = {}
for row in csv.reader(open(d + "/holders.csv")):
    if len(row) == 3:
        samples.setdefault(int(row[0]), {})[row[1]] = int(row[2])
for at in sorted(samples):
    held = samples[at]
    last = held
    if even_at is None and len(held) == 2 and max(held.values()) <= share + max(1, share // 20):
        even_at = at - t_join
gaps, doubles = [], 0
for row in csv.DictReader(open(d + "/events.csv")):
    if row["retry"] == "1" or not row["gap_ms"] or int(row["at_ms"]) < join:
        continue
    g = int(row["gap_ms"])
    gaps.append(g)
    if g < interval * 500:
        doubles += 1
gaps.sort()
p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else 0
split = "/".join(str(last.get(h, 0)) for h in ("r1", "r2"))
print("rebalance nodes %d replicas 1+1 time-to-even-s %s split %s gap-max-ms %d gap-p99-ms %d doubles %d retries %d"
      % (nodes, "%.1f" % (even_at / 1000) if even_at is not None else "never", split,
         gaps[-1] if gaps else 0, p99, doubles, r.get("retries", 0)))
PY
    cleanup
}

# Three replicas on one PostgreSQL (lease_ttl $lease_ttl), $nodes nodes enrolled
# through the first; after the warm-up the replica holding the most leases is
# SIGKILLed. From the nodes' side: how long after the kill every node had been polled
# again, the gap each node saw across the kill (max, p99), double attestations over the
# whole run, and throughput and CPU per attestation (all replicas) before the kill.
failover() {
    local d=$work/failover
    echo "# $(date -u +%FT%TZ) failover nodes=$nodes interval=$interval lease_ttl=$lease_ttl profile=$profile; load: $(uptime)" >&2
    start_replicas failover 3
    start_sim failover
    sleep "$warmup"
    local cpu0 cpu1 t_cpu0 t_kill victim
    cpu0=$(replicas_cpu)
    t_cpu0=$(date +%s%3N)
    sleep $((duration / 3))
    cpu1=$(replicas_cpu)
    victim=$(psql -At "$pg" -c "SELECT holder FROM $schema.agent_leases
        WHERE expires_at > extract(epoch from now()) GROUP BY holder ORDER BY count(*) DESC LIMIT 1")
    victim=${vpids[$(( ${victim#r} - 1 ))]}
    t_kill=$(date +%s%3N)
    kill -9 "$victim"
    wait "$spid"
    drop_schema
    python3 - "$d" "$t_cpu0" "$t_kill" "$cpu0" "$cpu1" "$interval" "$nodes" <<'PY'
import csv, json, sys
d, t_cpu0, t_kill, cpu0, cpu1, interval, nodes = sys.argv[1:8]
r = json.load(open(d + "/sim.json"))
start = r["started_unix_ms"]
t_cpu0, t_kill = int(t_cpu0) - start, int(t_kill) - start
interval_ms = float(interval) * 1000
last = {}
gaps, doubles, before = [], 0, 0
series = []
for row in csv.DictReader(open(d + "/events.csv")):
    at, node = int(row["at_ms"]), int(row["node"])
    if row["retry"] == "1":
        continue
    prev = last.get(node)
    if prev is not None:
        if at - prev < interval_ms / 2:
            doubles += 1
        if prev <= t_kill < at:
            gaps.append(at - prev)
            series.append((at - t_kill, at - prev))
    if t_cpu0 <= at < t_kill:
        before += 1
    last[node] = at
gaps.sort()
p99 = gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else 0
window = (t_kill - t_cpu0) / 1000
rate = before / window if window else 0
cpu = (float(cpu1) - float(cpu0)) * 1000 / (before or 1)
with open(d + "/failover-gaps.csv", "w") as f:
    f.write("ms_after_kill,gap_ms\n")
    for a, g in sorted(series):
        f.write("%d,%d\n" % (a, g))
print("failover nodes %s replicas 3 attestations/s-before %.1f cpu-per-attestation-ms %.3f "
      "reattested-max-ms %d gap-max-ms %d gap-p99-ms %d nodes-reattested %d doubles %d retries %d"
      % (nodes, rate, cpu, max((a for a, _ in series), default=0), gaps[-1] if gaps else 0,
         p99, len(gaps), doubles, r.get("retries", 0)))
PY
    cleanup
}

# The same point against Keylime 7.14.3's verifier (its own CA; measured boot `example`
# and IMA as for Vigil). CPU is summed over the verifier's process group (it forks
# workers).
keylime() {
    local d=$work/keylime
    rm -rf "$d" && mkdir -p "$d/etc"
    # shellcheck disable=SC1090
    . "$(bash scripts/keylime-reference.sh)"
    "$VIGIL_KEYLIME_BIN/keylime_upgrade_config" --defaults --templates ../shared/keylime-reference/templates --out "$d/etc" >/dev/null
    sed -i -e "s/^quote_interval = .*/quote_interval = $interval/" \
        -e "s/^measured_boot_policy_name = .*/measured_boot_policy_name = example/" \
        -e "s/^port = 8881/port = $((port + 3))/" \
        -e "s/^registrar_port = .*/registrar_port = $((port + 1))/" "$d/etc/verifier.conf"
    export KEYLIME_DIR=$d KEYLIME_VERIFIER_CONFIG=$d/etc/verifier.conf \
        KEYLIME_REGISTRAR_CONFIG=$d/etc/registrar.conf KEYLIME_CA_CONFIG=$d/etc/ca.conf \
        KEYLIME_LOGGING_CONFIG=$d/etc/logging.conf KEYLIME_TENANT_CONFIG=$d/etc/tenant.conf
    echo "# $(date -u +%FT%TZ) keylime nodes=$nodes interval=$interval; load: $(uptime)" >&2
    setsid "$VIGIL_KEYLIME_BIN/keylime_verifier" > "$d/verifier.log" 2>&1 &
    local kpid=$!
    pids+=($kpid)
    wait_for "$d/verifier.log" "Starting Cloud Verifier" 60 || true
    sleep 3
    group_cpu() { ps -o cputimes= -g "$kpid" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
    local rss0 cpu0 cpu1 rss1 total=$((warmup + duration))
    rss0=$(ps -o rss= -g "$kpid" | awk '{s += $1} END {print s}')
    "$bin/vigil-sim" --nodes "$nodes" --port "$port" --verifier-ca "$d/cv_ca/cacert.crt" \
        --verifier "https://127.0.0.1:$((port + 3))" --verifier-tls-dir "$d/cv_ca" \
        --interval "$interval" --ima-rate "$ima_rate" --duration "$total" --measure-after "$warmup" \
        --report "$d/sim.json" --events "$d/events.csv" > "$d/sim.out" 2> "$d/sim.log" &
    local spid=$!
    pids+=($spid)
    wait_for "$d/sim.log" "serving (ready)" $((300 + nodes / 5))
    sleep "$warmup"
    cpu0=$(group_cpu)
    sleep "$duration"
    cpu1=$(group_cpu)
    rss1=$(ps -o rss= -g "$kpid" | awk '{s += $1} END {print s}')
    wait "$spid"
    kill -9 -- "-$kpid" 2>/dev/null || true
    python3 - "$d/sim.json" "$nodes" "$cpu0" "$cpu1" "$rss0" "$rss1" "$duration" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
nodes, cpu0, cpu1, rss0, rss1, dur = int(sys.argv[2]), *map(float, sys.argv[3:7]), float(sys.argv[7])
cpu_ms = (cpu1 - cpu0) * 1000 / (r["quotes_per_s"] * dur or 1)
print("keylime nodes %d attestations/s %.1f p99-lag-ms %d cpu-per-attestation-ms %.3f rss-per-node-kib %.1f"
      % (nodes, r["quotes_per_s"], r["lag_ms"]["p99"], cpu_ms, (rss1 - rss0) / nodes))
PY
    cleanup
}

# Everything, bounded: a Vigil sweep, a Keylime sweep, failover; the plots (PNG, with
# matplotlib from PyPI in .work/plot-venv) and the table into docs/benchmarks.md.
all() {
    local out=$work/all.txt
    : > "$out"
    local vigil_counts=${VIGIL_SWEEP:-"100 1000 2000 5000 10000"}
    local keylime_counts=${KEYLIME_SWEEP:-"50 100 200 400"}
    for n in $vigil_counts; do nodes=$n; point | tee -a "$out"; done
    for n in $keylime_counts; do nodes=$n; keylime | tee -a "$out"; done
    nodes=${FLEET_NODES:-2000}
    for n in $replica_counts; do replicas_point "$n" | tee -a "$out"; done
    rebalance | tee -a "$out"
    failover | tee -a "$out"
    if [ ! -x .work/plot-venv/bin/python ]; then
        python3 -m venv .work/plot-venv && .work/plot-venv/bin/pip install -q matplotlib
    fi
    .work/plot-venv/bin/python - "$out" "$work/failover/failover-gaps.csv" docs <<'PY'
import sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, gaps, docs = sys.argv[1:4]
rows = {"vigil": [], "keylime": []}
for line in open(out):
    f = line.split()
    if f and f[0] in ("nodes", "keylime"):
        kind = "keylime" if f[0] == "keylime" else "vigil"
        if kind == "keylime":
            f = f[1:]
        rows[kind].append((int(f[1]), float(f[5])))
plt.figure(figsize=(6, 4))
for kind, pts in rows.items():
    if pts:
        pts.sort()
        # A log axis from 1 ms: a p99 under a millisecond is drawn at 1.
        plt.plot([p[0] for p in pts], [max(p[1], 1) for p in pts], marker="o", label=kind + " p99")
plt.xscale("log"); plt.yscale("log")
plt.xlabel("simulated nodes"); plt.ylabel("poll lag p99 (ms)")
plt.title("Poll lag against node count (quote_interval 2 s)")
plt.legend(); plt.grid(True, which="both", alpha=0.3); plt.tight_layout()
plt.savefig(docs + "/fleet-lag.png", dpi=100)
plt.figure(figsize=(6, 4))
xs, ys = [], []
for line in open(gaps).readlines()[1:]:
    a, g = line.strip().split(",")
    xs.append(int(a) / 1000); ys.append(int(g) / 1000)
plt.scatter(xs, ys, s=4)
plt.xlabel("seconds after SIGKILL (node re-attested)"); plt.ylabel("gap seen by the node (s)")
plt.title("Failover: gap seen by each node across the SIGKILL"); plt.grid(True, alpha=0.3)
plt.tight_layout(); plt.savefig(docs + "/fleet-failover.png", dpi=100)
PY
    python3 - "$out" docs/benchmarks.md "$(nproc)" "$(uptime)" <<'PY'
import sys, datetime
out, doc, cores, load = sys.argv[1:5]
lines = [l.rstrip() for l in open(out) if l.strip() and not l.startswith("#")]
block = ["<!-- fleet-bench:begin -->",
         "Last `scripts/bench-fleet.sh --all` run: %s, %s cores, load at the end: %s"
         % (datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), cores, load.strip()),
         "", "```"] + lines + ["```", "",
         "![poll lag against node count](fleet-lag.png)", "",
         "![failover gap per node](fleet-failover.png)", "<!-- fleet-bench:end -->"]
text = open(doc).read()
a, b = text.find("<!-- fleet-bench:begin -->"), text.find("<!-- fleet-bench:end -->")
if a >= 0 and b > a:
    text = text[:a] + "\n".join(block) + text[b + len("<!-- fleet-bench:end -->"):]
else:
    text = text.rstrip() + "\n\n" + "\n".join(block) + "\n"
open(doc, "w").write(text)
PY
    echo "figures in $out and docs/benchmarks.md; plots docs/fleet-lag.png docs/fleet-failover.png" >&2
}

case "$mode" in
    point) point ;;
    all) all ;;
    sweep)
        for n in $sweep; do nodes=$n; point; done ;;
    failover) failover ;;
    replicas)
        for n in $replica_counts; do replicas_point "$n"; done ;;
    rebalance) rebalance ;;
    keylime) keylime ;;
esac
