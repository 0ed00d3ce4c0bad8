#!/usr/bin/env bash
# The main job: installs what is needed, builds Vigil and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vigil-cli
exec target/release/vigil demo "$@"
