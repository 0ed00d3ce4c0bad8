#!/usr/bin/env bash
# Times `vigil policy create runtime --rootfs` against Keylime's `keylime-policy create
# runtime --rootfs` on the same tree, and checks that both give the same digests.
#
#   scripts/bench-policy-create.sh [FILES] [TOTAL_MIB]   a synthetic tree (default 20000
#                                                        files, 1024 MiB), removed after
#   scripts/bench-policy-create.sh --tree DIR            an existing tree, e.g. /usr
#
# Environment: ROUNDS (default 1) rounds of timed runs, the tools in turn within each
# round; VIGIL_BEFORE=PATH also times another `vigil` binary (an older build) in each
# round, for before/after figures.
#
# Needs a release build (cargo build --release -p vigil-cli) and the Keylime reference
# (scripts/keylime-reference.sh). The page cache is warm for every tool (each is run once
# before the timed rounds).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
vigil="$repo/target/release/vigil"
rounds="${ROUNDS:-1}"
. "$(bash "$repo/scripts/keylime-reference.sh")"
keylime="$VIGIL_KEYLIME_BIN/keylime-policy"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "${1:-}" = "--tree" ]; then
    tree="${2:?--tree needs a directory}"
else
    files="${1:-20000}"
    mib="${2:-1024}"
    tree="$work/root"
    # Sizes follow a long tail like a real /usr: most files small, a few large.
    python3 - "$tree" "$files" "$mib" <<'PY'
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
fi
echo "tree: $tree, $(find "$tree" -type f | wc -l) files, $(du -sm "$tree" 2>/dev/null | cut -f1) MiB, $(nproc) CPUs, $rounds round(s)"

tools=(vigil keylime)
[ -n "${VIGIL_BEFORE:-}" ] && tools=(before vigil keylime)
command_of() { # tool -> the command, without the output file
    case "$1" in
        vigil) echo "$vigil" policy create runtime ;;
        before) echo "$VIGIL_BEFORE" policy create runtime ;;
        keylime) echo "$keylime" create runtime ;;
    esac
}
for t in "${tools[@]}"; do # warm-up (page cache)
    $(command_of "$t") --rootfs "$tree" -o "$work/$t.json" >/dev/null 2>&1
done
for round in $(seq "$rounds"); do
    for t in "${tools[@]}"; do
        t0=$(date +%s.%N)
        $(command_of "$t") --rootfs "$tree" -o "$work/$t.json" >/dev/null 2>"$work/$t.err"
        t1=$(date +%s.%N)
        python3 -c "import sys; print(f'round {sys.argv[4]}  {sys.argv[3]:8} {float(sys.argv[2])-float(sys.argv[1]):7.2f} s')" "$t0" "$t1" "$t" "$round"
    done
done
python3 - "${tools[@]/#/$work/}" <<'PY'
import json, sys
digests = [json.load(open(p + ".json"))["digests"] for p in sys.argv[1:]]
assert all(d == digests[-1] for d in digests), "digests differ"
print(f"identical digests: {len(digests[-1])} paths")
PY
