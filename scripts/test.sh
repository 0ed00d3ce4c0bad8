#!/usr/bin/env bash
# Runs every check and test Vigil has: formatting, lints, unit and integration tests
# (including the differential suite against Keylime 7.14.3 and the interoperability
# tests that run Keylime's registrar, verifier and tenant: docs/interop.md), the
# packages' install test (scripts/package-test.sh: docs/deploy.md), and a short run of
# each fuzz target.
#   VIGIL_SKIP_KEYLIME=1   skip installing Keylime (its differential tests then skip,
#                          listed at the end of the run, except under CI=true, where
#                          they fail instead)
#   VIGIL_SKIP_FUZZ=1      skip the fuzz smoke runs
#   VIGIL_FUZZ_SECONDS=N   seconds per fuzz target (default 5)
#   VIGIL_SKIP_PACKAGES=1  skip the packages' install test (scripts/package-test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Supply chain (deny.toml): licences, banned crates and sources always; advisories
# only against a RustSec database already on this machine (cargo-deny's own copy in
# $CARGO_HOME/advisory-dbs, fetched by `cargo deny fetch db` where github.com is
# reachable), since the database cannot be fetched from crates.io.
echo "== cargo deny"
cargo deny --locked check bans licenses sources
cargo deny --locked --manifest-path fuzz/Cargo.toml check bans licenses sources
cargo deny --locked fetch db >/dev/null 2>&1 || true
if compgen -G "${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-*" >/dev/null; then
    cargo deny --locked --offline check advisories
    cargo deny --locked --offline --manifest-path fuzz/Cargo.toml check advisories
else
    skipped_advisories="no RustSec advisory database (github.com unreachable and none in ${CARGO_HOME:-$HOME/.cargo}/advisory-dbs)"
    echo "SKIPPED: cargo deny advisories: $skipped_advisories"
fi

if [ "${VIGIL_SKIP_KEYLIME:-0}" != 1 ]; then
    echo "== Keylime 7.14.3 reference peer"
    # shellcheck disable=SC1090
    . "$(bash scripts/keylime-reference.sh)"
fi

# A test whose peer (swtpm, the Keylime venv, PostgreSQL, openssl) is missing skips
# outside CI (vigil_testkit::skip) and appends `SKIPPED: <test file>: <reason>` here.
export VIGIL_SKIP_LOG="$PWD/.work/skipped-tests.log"
mkdir -p .work
: > "$VIGIL_SKIP_LOG"

# Every skip of the run, printed last, where it is seen, so a green run cannot hide a
# skipped suite: the advisories check, and one line per skipped test file with its
# reasons (each once) and how many skips.
skipped() {
    [ -n "${skipped_advisories:-}" ] || [ -n "${skipped_packages:-}" ] || [ -s "$VIGIL_SKIP_LOG" ] ||
        return 0
    echo "== skipped (under CI=true a test fails instead of skipping)"
    if [ -n "${skipped_advisories:-}" ]; then
        echo "SKIPPED: cargo deny advisories: $skipped_advisories"
    fi
    if [ -n "${skipped_packages:-}" ]; then
        echo "SKIPPED: scripts/package-test.sh: $skipped_packages"
    fi
    awk -F': ' '
        {
            file = $2; reason = substr($0, length($1 $2) + 5)
            if (!(file in count)) { order[++n] = file; reasons[file] = reason }
            else if (!((file, reason) in seen)) { reasons[file] = reasons[file] "; " reason }
            seen[file, reason] = 1
            count[file]++
        }
        END {
            for (i = 1; i <= n; i++) {
                f = order[i]
                printf "SKIPPED: %s: %s (%d skip%s)\n", f, reasons[f], count[f], (count[f] > 1 ? "s" : "")
            }
        }' "$VIGIL_SKIP_LOG"
}

echo "== cargo test"
status=0
cargo test --workspace --locked || status=$?
if [ "$status" != 0 ]; then
    skipped
    exit "$status"
fi

# The .debs and .rpms, made from the debug binaries cargo test has just built (no
# release build), installed into a scratch root and started from their configuration.
if [ "${VIGIL_SKIP_PACKAGES:-0}" != 1 ]; then
    echo "== packages"
    bash scripts/package-test.sh || status=$?
    if [ "$status" != 0 ]; then
        skipped
        exit "$status"
    fi
else
    skipped_packages="VIGIL_SKIP_PACKAGES=1"
fi

if [ "${VIGIL_SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzz smoke"
    bash scripts/fuzz-smoke.sh "${VIGIL_FUZZ_SECONDS:-5}"
fi

skipped
