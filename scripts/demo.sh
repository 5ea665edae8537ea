#!/usr/bin/env bash
# The README's main command: sets up, builds (release) and runs the demo on the default store
# ($CHPOX_STORE, else $XDG_STATE_HOME/chpox, else ~/.local/state/chpox). Extra arguments go to
# chpox-demo (see `chpox-demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product chpox-demo 2>&1 | tail -n 1
exec .build/release/chpox-demo "$@"
