#!/usr/bin/env bash
# Side-by-side IMA verification benchmark: Keylime 7.14.3's process_measurement_list
# against `vigil ima check`, on the same generated logs and policies, in one run.
# Writes the table into docs/benchmarks.md between the ima-bench markers.
#
#   scripts/bench-ima.sh [N ...]     entries per log (default: 100000 1000000)
#
# Logs and policies come from ../shared/bench/keylime_ima_bench.py: ima-ng, sha256 file
# digests, SHA-1 template hashes, sha256 PCR bank, a policy with 20 exclude regexes.
# Keylime's figure times only process_measurement_list (policy already parsed). Vigil's
# is the whole command — process start, reading the policy and log files, parsing the
# policy, replaying and validating — so the ratio understates Vigil's advantage.
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
    k = json.loads(line)
    n = k["n_entries"]
    log = os.path.join(work, "ascii_runtime_measurements_%d" % n)
    pol = os.path.join(work, "runtime_policy_%d.json" % n)
    cmd = [vigil, "ima", "check", "--log", log, "--policy", pol, "--pcr", k["expected_pcr10"],
           "--bank", "sha256", "--json"]
    best = None
    for _ in range(5):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        verdict = json.loads(out.stdout)
        if out.returncode != 0 or not verdict["trusted"] or verdict["pcr_match"] != n:
            sys.exit("vigil did not trust the benchmark log: %s %s" % (out.stdout[:500], out.stderr[:500]))
        best = dt if best is None else min(best, dt)
    v_rate = n / best
    rows.append((n, k["entries_per_s_best"], k["best_s"], int(v_rate), best, v_rate / k["entries_per_s_best"]))

table = ["| entries | Keylime entries/s | Keylime s | Vigil entries/s | Vigil s | Vigil / Keylime |",
         "|---:|---:|---:|---:|---:|---:|"]
for n, kr, ks, vr, vs, ratio in rows:
    table.append("| %d | %s | %.3f | %s | %.3f | **%.1f×** |" % (n, format(kr, ","), ks, format(vr, ","), vs, ratio))
section = "\n".join([
    "<!-- ima-bench:begin -->",
    "Measured %s on %s (%s cores) with `scripts/bench-ima.sh %s`; best of 3 runs for Keylime"
    " (`process_measurement_list` only), best of 5 for Vigil (the whole `vigil ima check` command,"
    " one core)." % (time.strftime("%Y-%m-%d"), cpu, cores, sizes_arg),
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
