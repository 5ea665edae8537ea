#!/usr/bin/env bash
# The README's test command, and what CI runs: sets up, builds everything and runs every test
# (unit, crash-safety with SIGKILLed writers, corruption, GC, security, and the bounded fuzzer).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build --build-tests 2>&1 | tail -n 3
log=.build/test-output.txt
set +e
swift test --skip-build --disable-xctest 2>&1 | tee "$log" | grep -v -E '^(◇|↳) '
status=${PIPESTATUS[0]}
set -e
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -v -c 'Test run with' || true)
failed=$(grep -E '^✘ Test .* failed' "$log" | grep -v -c 'Test run with' || true)
echo "$passed passed, $failed failed"
if [ "$passed" -eq 0 ] && [ "$status" -eq 0 ]; then echo "no test ran"; exit 1; fi
exit "$status"
