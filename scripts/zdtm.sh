#!/usr/bin/env bash
# CRIU's zdtm static tests, run through chpox (scripts/zdtm/run-zdtm.py says how): builds the
# peer (../shared/peers/build-criu.sh, into .build/peers) and chpox when missing, then runs
#   scripts/zdtm.sh            the CI subset, each test checked against the outcome
#                              scripts/zdtm/ci-list.txt expects (part of scripts/test.sh)
#   scripts/zdtm.sh --all      every static test the host flavour runs, written to
#                              docs/zdtm-results.md (the table kept in the repo)
#   scripts/zdtm.sh --lazy     the tests of scripts/zdtm/lazy-list.txt restarted with
#                              ld-chpox --lazy, each held to its outcome (part of scripts/test.sh)
#   scripts/zdtm.sh TEST...    those tests, their outcomes printed
set -euo pipefail
cd "$(dirname "$0")/.."
peers=$(cd .. && pwd)/shared/peers
zdtm=.build/peers/criu-4.2/test/zdtm
if [ ! -x "$zdtm/static/env00" ]; then
  [ -x "$peers/build-criu.sh" ] || [ -f "$peers/build-criu.sh" ] || {
    echo "zdtm: $peers/build-criu.sh is missing: the peers come with shared/ beside the checkout"
    echo "zdtm: 0 passed, 1 failed"
    exit 1
  }
  echo "zdtm: building CRIU's zdtm tests into .build/peers (a few minutes, once)"
  bash "$peers/build-criu.sh" "$PWD/.build/peers" | tail -n 2
fi
[ -x .build/debug/cpx ] && [ -x .build/debug/ld-chpox ] || swift build 2>&1 | tail -n 2
run=(python3 scripts/zdtm/run-zdtm.py --zdtm "$zdtm" --bin .build/debug)
case "${1:-}" in
  "") exec "${run[@]}" --list scripts/zdtm/ci-list.txt ;;
  --lazy) exec "${run[@]}" --lazy --list scripts/zdtm/lazy-list.txt ;;
  --all) exec "${run[@]}" --json .build/zdtm-results.json --markdown docs/zdtm-results.md ;;
  *) exec "${run[@]}" "$@" ;;
esac
