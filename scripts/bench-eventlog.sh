#!/usr/bin/env bash
# UEFI event-log benchmark: `tpm2_eventlog` (what Keylime runs on every quote) next to
# `vigil eventlog replay` / `vigil eventlog dump` and the in-process criterion figures,
# on Keylime's 49 KB test log. Writes the table into docs/benchmarks.md between the
# eventlog-bench markers.
#
#   scripts/bench-eventlog.sh [RUNS]     process runs per command (default 50)
#
# Process timings use hyperfine when it is installed (apt-get install hyperfine), else
# a Python loop (mean wall time over RUNS runs after 3 warm-up runs). Criterion runs are
# kept short (--warm-up-time 1 --measurement-time 3).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-50}"
log=../shared/testdata/keylime/test/data/create-mb-policy/binary_bios_measurements
[ -f "$log" ] || { echo "missing $log" >&2; exit 2; }
command -v tpm2_eventlog >/dev/null || { echo "tpm2_eventlog is not installed (scripts/setup.sh)" >&2; exit 2; }

cargo build --release --locked -p vigil-cli >&2
cargo bench --locked -p vigil-core --bench eventlog -- --warm-up-time 1 --measurement-time 3 >&2

python3 - "$log" target/release/vigil "$runs" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" <<'PY'
import json, os, re, shutil, subprocess, sys, time
log, vigil, runs, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def timed(cmd):
    """Mean wall seconds per run of cmd."""
    if shutil.which("hyperfine"):
        out = "/tmp/vigil-eventlog-hyperfine.json"
        subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", out,
                        " ".join(cmd)], check=True, capture_output=True)
        return json.load(open(out))["results"][0]["mean"], "hyperfine"
    for _ in range(3):
        subprocess.run(cmd, check=True, capture_output=True)
    t0 = time.perf_counter()
    for _ in range(runs):
        subprocess.run(cmd, check=True, capture_output=True)
    return (time.perf_counter() - t0) / runs, "loop"

def criterion(name):
    est = json.load(open("target/criterion/eventlog/%s/new/estimates.json" % name))
    return est["mean"]["point_estimate"] / 1e9

t_tools, how = timed(["tpm2_eventlog", "--eventlog-version=2", log])
t_replay, _ = timed([vigil, "eventlog", "replay", log])
t_dump, _ = timed([vigil, "eventlog", "dump", log])
rows = [
    ("`tpm2_eventlog --eventlog-version=2 LOG` (process)", t_tools),
    ("`vigil eventlog replay LOG` (process)", t_replay),
    ("`vigil eventlog dump LOG` (process, YAML)", t_dump),
    ("in-process parse + replay (criterion `eventlog/parse_replay`)", criterion("parse_replay")),
    ("in-process parse + decode (criterion `eventlog/parse_decode`)", criterion("parse_decode")),
    ("in-process parse + YAML (criterion `eventlog/parse_yaml`)", criterion("parse_yaml")),
]
def fmt(s):
    return "%.1f µs" % (s * 1e6) if s < 1e-3 else "%.2f ms" % (s * 1e3)
lines = [
    "<!-- eventlog-bench:begin -->",
    "UEFI event log: Keylime's 49 KB test log (`binary_bios_measurements`, sha1 + sha256, "
    "121 events), `scripts/bench-eventlog.sh %d` on %s (%d cores shared), processes timed by %s "
    "(mean of %d runs), tpm2_eventlog %s." % (
        runs, cpu, os.cpu_count(), how, runs,
        subprocess.run(["tpm2_eventlog", "--version"], capture_output=True, text=True).stdout.split('version="')[1].split('"')[0]),
    "",
    "| What | Time per log | vs tpm2_eventlog |",
    "|---|---|---|",
]
for what, t in rows:
    lines.append("| %s | %s | %.0f× |" % (what, fmt(t), t_tools / t))
lines += [
    "",
    "Keylime pays the tpm2_eventlog process (plus its YAML load and enrichment) on every "
    "quote with a UEFI log; Vigil's verifier pays the in-process figure. Process figures "
    "are dominated by process start-up on both sides.",
    "<!-- eventlog-bench:end -->",
]
section = "\n".join(lines)
path = "docs/benchmarks.md"
doc = open(path).read()
pat = re.compile(r"<!-- eventlog-bench:begin -->.*?<!-- eventlog-bench:end -->", re.S)
doc = pat.sub(section, doc) if pat.search(doc) else doc.rstrip("\n") + "\n\n## UEFI event log\n\n" + section + "\n"
open(path, "w").write(doc)
print(section)
PY
