#!/usr/bin/env bash
# The main job: installs what is needed, builds Vigil and runs the demo.
#
# Today's demo checks a bundled node's IMA measurement list against its runtime policy
# and the PCR 10 value its TPM quoted, then a tampered copy of the list, and shows both
# verdicts. It fails (non-zero exit) if either verdict is not the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vigil-cli
vigil=target/release/vigil
ex=examples/ima
pcr() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["sha256"])' "$ex/pcr10.json" "$1"; }

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A healthy node: its IMA log against its runtime policy and quoted PCR 10 (sha256 bank)"
echo "\$ vigil ima check --log $ex/ascii_runtime_measurements --policy $ex/runtime-policy.json --pcr <quoted> --bank sha256"
"$vigil" ima check --log "$ex/ascii_runtime_measurements" --policy "$ex/runtime-policy.json" \
    --pcr "$(pcr ascii_runtime_measurements)" --bank sha256
echo "-> trusted, as expected"

step "The same node after tampering: sshd_config replaced, /root/bad-script.sh executed"
set +e
"$vigil" ima check --log "$ex/tampered_runtime_measurements" --policy "$ex/runtime-policy.json" \
    --pcr "$(pcr tampered_runtime_measurements)" --bank sha256
rc=$?
set -e
if [ "$rc" -ne 1 ]; then
    echo "demo: expected the tampered log to be rejected (exit 1), got exit $rc" >&2
    exit 1
fi
echo "-> not trusted (exit 1), as expected"
