#!/usr/bin/env bash
# Side-by-side IMA verification benchmark: Keylime 7.14.3's process_measurement_list
# against `vigil ima check`, on the same generated logs and policies, in one run.
# Writes the table into docs/benchmarks.md between the ima-bench markers.
#
#   scripts/bench-ima.sh [N ...]     entries per log (default: 100000 1000000)
#
# Logs and policies come from ../shared/bench/keylime_ima_bench.py: ima-ng, sha256 file
# digests, SHA-1 template hashes, sha256 PCR bank, a policy with 20 exclude regexes.
# Keylime's figure times only process_measurement_list (policy already parsed). For Vigil
# the script times the whole command, and the same command on an empty log (process
# start + reading and indexing the policy); their difference is the check itself, the
# like-for-like figure. (Keylime's verifier re-parses the policy every round; Vigil's
# parses it once per policy.)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

# shellcheck disable=SC1090
. "$(bash scripts/keylime-reference.sh)"
cargo build --release --locked -p vigil-cli >&2
work=.work/bench-ima
mkdir -p "$work"

"$VIGIL_KEYLIME_PYTHON" ../shared/bench/keylime_ima_bench.py --n "${sizes[@]}" --repeat 3 \
    --excludes 20 --pcr-bank sha256 --outdir "$work" > "$work/keylime.jsonl"

python3 - "$work" target/release/vigil "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "${sizes[*]}" <<'PY'
import json, os, re, subprocess, sys, time
work, vigil, cores, cpu, sizes_arg = sys.argv[1:6]
rows = []
for line in open(os.path.join(work, "keylime.jsonl")):
    if not line.startswith("{"):
        continue  # Keylime's own log lines share its stdout
    k = json.loads(line)
    n = k["n_entries"]
    log = os.path.join(work, "ascii_runtime_measurements_%d" % n)
    pol = os.path.join(work, "runtime_policy_%d.json" % n)
    cmd = [vigil, "ima", "check", "--log", log, "--policy", pol, "--pcr", k["expected_pcr10"],
           "--bank", "sha256", "--json"]
    empty = os.path.join(work, "empty_log")
    open(empty, "w").close()
    load_cmd = [vigil, "ima", "check", "--log", empty, "--policy", pol, "--json"]

    def best_of(command, check):
        best = None
        for _ in range(5):
            t0 = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            check(out)
            best = dt if best is None else min(best, dt)
        return best

    def trusted(out):
        verdict = json.loads(out.stdout)
        if out.returncode != 0 or not verdict["trusted"] or verdict["pcr_match"] != n:
            sys.exit("vigil did not trust the benchmark log: %s %s" % (out.stdout[:500], out.stderr[:500]))

    def loaded(out):
        if out.returncode != 0:
            sys.exit("vigil could not load the benchmark policy: %s" % out.stderr[:500])

    whole = best_of(cmd, trusted)
    load = best_of(load_cmd, loaded)
    check_s = max(whole - load, 1e-9)
    kr = k["entries_per_s_best"]
    rows.append((n, kr, k["best_s"], whole, load, check_s, int(n / check_s), (n / check_s) / kr, (n / whole) / kr))

table = ["| entries | Keylime entries/s | Keylime s | Vigil whole command s | of which startup + policy load s | Vigil check s | Vigil check entries/s | check vs Keylime | whole command vs Keylime |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for n, kr, ks, whole, load, check_s, vr, ratio, whole_ratio in rows:
    table.append("| %d | %s | %.3f | %.3f | %.3f | %.3f | %s | **%.1f×** | %.1f× |"
                 % (n, format(kr, ","), ks, whole, load, check_s, format(vr, ","), ratio, whole_ratio))
section = "\n".join([
    "<!-- ima-bench:begin -->",
    "Measured %s on %s (%s cores) with `scripts/bench-ima.sh %s`; best of 3 runs for Keylime"
    " (`process_measurement_list` only, policy already parsed), best of 5 for Vigil (`vigil ima check`;"
    " the check time is the whole command minus the same command on an empty log)."
    % (time.strftime("%Y-%m-%d"), cpu, cores, sizes_arg),
    "",
    *table,
    "<!-- ima-bench:end -->",
])
doc_path = "docs/benchmarks.md"
doc = open(doc_path).read()
pattern = re.compile(r"<!-- ima-bench:begin -->.*?<!-- ima-bench:end -->", re.S)
if pattern.search(doc):
    doc = pattern.sub(lambda _: section, doc)
else:
    doc = doc.rstrip("\n") + "\n\n## IMA verification: Vigil vs Keylime\n\n" + section + "\n"
open(doc_path, "w").write(doc)
print(section)
PY
