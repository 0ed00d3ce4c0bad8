#!/usr/bin/env bash
# Times `vigil policy create runtime --rootfs` against Keylime's `keylime-policy create
# runtime --rootfs` on the same synthetic tree, and checks that both give the same digests.
#
#   scripts/bench-policy-create.sh [FILES] [TOTAL_MIB]     (default 20000 files, 1024 MiB)
#
# Needs a release build (cargo build --release -p vigil-cli) and the Keylime reference
# (scripts/keylime-reference.sh). The tree is made under $TMPDIR and removed afterwards;
# the page cache is warm for both tools (each is run once before it is timed).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
files="${1:-20000}"
mib="${2:-1024}"
vigil="$repo/target/release/vigil"
. "$(bash "$repo/scripts/keylime-reference.sh")"
keylime="$VIGIL_KEYLIME_BIN/keylime-policy"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Sizes follow a long tail like a real /usr: most files small, a few large.
python3 - "$work/root" "$files" "$mib" <<'PY'
import os, random, sys
root, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1)
weights = [rng.paretovariate(1.2) for _ in range(n)]
scale = mib * 1024 * 1024 / sum(weights)
block = rng.randbytes(1 << 20)
for i, w in enumerate(weights):
    d = os.path.join(root, "usr", f"d{i % 97}", f"e{i % 13}")
    os.makedirs(d, exist_ok=True)
    size = int(w * scale)
    with open(os.path.join(d, f"f {i}.bin" if i % 50 == 0 else f"f{i}.bin"), "wb") as f:
        while size > 0:
            f.write(block[: min(size, len(block))] + i.to_bytes(8, "little"))
            size -= len(block) + 8
PY
echo "tree: $files files, $(du -sm "$work/root" | cut -f1) MiB, $(nproc) CPUs"

run() { # name, command...
    local name="$1"; shift
    "$@" >/dev/null 2>&1 # warm-up (page cache)
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/$name.err"; t1=$(date +%s.%N)
    python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]:8} {t:7.2f} s  {int(sys.argv[4])/t:9.0f} files/s')" "$t0" "$t1" "$name" "$files"
}
run vigil "$vigil" policy create runtime --rootfs "$work/root" -o "$work/vigil.json"
run keylime "$keylime" create runtime --rootfs "$work/root" -o "$work/keylime.json"
python3 - "$work/vigil.json" "$work/keylime.json" <<'PY'
import json, sys
v, k = (json.load(open(p))["digests"] for p in sys.argv[1:])
assert v == k, "digests differ"
print(f"identical digests: {len(v)} paths")
PY
