#!/usr/bin/env bash
# A longer fuzz campaign, outside CI: each target in turn for SECONDS (default 3600, an
# hour), under `nice`, from its corpus in fuzz/corpus/<target>/; then the corpus is
# minimized (cargo fuzz cmin) and its small inputs are kept in the repository as
# `seed-*` files (the only ones git tracks there), so every later run and the CI smoke
# run start from what this one reached.
# Usage: scripts/fuzz-campaign.sh [-t SECONDS] [TARGET...]   (no target: every target)
# Prints, per target, the figures docs/benchmarks.md records: seconds, executions,
# coverage (libFuzzer's cov/ft), corpus size, crashes. A crash stops the campaign with
# the reproducer's path; it is a bug: fix it in the core with a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=3600
if [ "${1:-}" = "-t" ]; then
    secs="$2"
    shift 2
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
# Inputs kept as seeds are at most this large (bytes): the corpus stays small in git.
max_seed=16384
logs=$(mktemp -d)
printf '%-16s %8s %14s %8s %8s %8s %8s\n' target seconds executions cov ft corpus crashes
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    log="$logs/$target.log"
    set +e
    nice -n 10 cargo fuzz run -s none "$target" "$corpus" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    crashes=$(find "fuzz/artifacts/$target" -type f 2>/dev/null | wc -l)
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $target failed (exit $status); reproduce with: cargo fuzz run -s none $target fuzz/artifacts/$target/<file>" >&2
        exit 1
    fi
    # A greedy set cover: the fewest inputs that keep every feature reached.
    nice -n 10 cargo fuzz cmin -s none "$target" "$corpus" -- -set_cover_merge=1 \
        >"$logs/$target.cmin.log" 2>&1
    for f in "$corpus"/*; do
        name=$(basename "$f")
        case "$name" in seed-*) continue ;; esac
        if [ "$(stat -c %s "$f")" -le "$max_seed" ]; then
            mv "$f" "$corpus/seed-$name"
        fi
    done
    kept=$(find "$corpus" -name 'seed-*' -type f | wc -l)
    printf '%-16s %8s %14s %8s %8s %8s %8s\n' "$target" "$secs" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$kept" "$crashes"
done
rm -rf "$logs"
