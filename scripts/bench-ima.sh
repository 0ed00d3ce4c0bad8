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
# the script times the whole command, and reads the policy-load and check times the
# command measures itself (`--timings`); the check is the like-for-like figure.
# (Keylime's verifier re-parses the policy every round; Vigil's parses it once per
# policy.)
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
           "--bank", "sha256", "--json", "--timings"]
    timing = re.compile(r"timings: policy ([0-9.]+) s, check ([0-9.]+) s")

    # Best of 5 for each figure: the whole command (wall clock), and the policy load
    # and the check as the command itself timed them.
    whole = load = check_s = None
    for _ in range(5):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        verdict = json.loads(out.stdout or "null")
        if out.returncode != 0 or not verdict or not verdict["trusted"] or verdict["pcr_match"] != n:
            sys.exit("vigil did not trust the benchmark log: %s %s" % (out.stdout[:500], out.stderr[:500]))
        m = timing.search(out.stderr)
        if not m:
            sys.exit("vigil printed no timings: %s" % out.stderr[:500])
        whole = dt if whole is None else min(whole, dt)
        load = float(m.group(1)) if load is None else min(load, float(m.group(1)))
        check_s = float(m.group(2)) if check_s is None else min(check_s, float(m.group(2)))
    kr = k["entries_per_s_best"]
    rows.append((n, kr, k["best_s"], whole, load, check_s, int(n / check_s), (n / check_s) / kr, (n / whole) / kr))

table = ["| entries | Keylime entries/s | Keylime s | Vigil whole command s | of which policy load s | Vigil check s | Vigil check entries/s | check vs Keylime | whole command vs Keylime |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for n, kr, ks, whole, load, check_s, vr, ratio, whole_ratio in rows:
    table.append("| %d | %s | %.3f | %.3f | %.3f | %.3f | %s | **%.1f×** | %.1f× |"
                 % (n, format(kr, ","), ks, whole, load, check_s, format(vr, ","), ratio, whole_ratio))
section = "\n".join([
    "<!-- ima-bench:begin -->",
    "Measured %s on %s (%s cores) with `scripts/bench-ima.sh %s`; best of 3 runs for Keylime"
    " (`process_measurement_list` only, policy already parsed), best of 5 for Vigil (`vigil ima check"
    " --timings`: the policy load and the check as timed inside the command, the whole command by"
    " wall clock)."
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
