#!/usr/bin/env bash
# Runs every check and test Vigil has: formatting, lints, unit and integration tests,
# the differential tests against Keylime 7.14.3, and a short run of each fuzz target.
# Usage: scripts/test.sh            (everything)
#        VIGIL_SKIP_KEYLIME=1 ...   (skip the Keylime differential suite)
#        VIGIL_SKIP_FUZZ=1 ...      (skip the fuzz smoke runs)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
