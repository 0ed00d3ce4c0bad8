#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly, so the targets keep building and the parsers
# meet a few million mutated inputs on every test run.
# Usage: scripts/fuzz-smoke.sh [seconds-per-target]   (default 5)
# Longer campaigns, with the corpus kept as seeds and the figures for docs/benchmarks.md:
# scripts/fuzz-campaign.sh [-t seconds] [target...]
#
# `-s none`: Vigil's core forbids unsafe code, so AddressSanitizer (which needs a nightly
# toolchain) adds little; libFuzzer still catches panics, overflows and timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
for target in $(cargo fuzz list); do
    mkdir -p "fuzz/corpus/$target"
    echo "== fuzz $target (${secs}s)"
    set +e
    cargo fuzz run -s none "$target" -- -max_total_time="$secs" -rss_limit_mb=1024 2>&1 \
        | grep -E '^(Done|==|SUMMARY)|panicked|ERROR|Finished'
    # libFuzzer exits non-zero on a crash; PIPESTATUS keeps that from being lost in the grep.
    status=${PIPESTATUS[0]}
    set -e
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target failed (exit $status); reproduce with: cargo fuzz run -s none $target fuzz/artifacts/$target/<file>" >&2
        exit 1
    fi
done
