#!/usr/bin/env bash
# The main job: installs what is needed, builds Vigil (release) and runs `vigil demo`.
#
# `vigil demo` runs a whole attestation deployment on this machine (a swtpm with an EK
# certificate, vigil-registrar, vigil-verifier on SQLite, vigil-agent with IMA
# emulation over a demo directory), enrols and attests the node, then shows the
# verifier catching an unknown script and a modified measured file, and stops every
# process it started by its PID. See the README's "Two commands".
#
# Arguments go to `vigil demo`: --keep-running, --timeout SECS (or VIGIL_DEMO_TIMEOUT),
# --dir DIR (or VIGIL_DEMO_DIR; default .work/demo, wiped at each start).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
printf '\033[1m== %s\033[0m\n' "Building vigil, vigil-registrar, vigil-verifier, vigil-agent (release)"
cargo build --release --locked -q -p vigil-cli -p vigil-registrar -p vigil-verifier -p vigil-agent
export VIGIL_DEMO_DIR=${VIGIL_DEMO_DIR:-$PWD/.work/demo}
exec target/release/vigil demo "$@"
