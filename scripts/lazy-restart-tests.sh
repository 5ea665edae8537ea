#!/usr/bin/env bash
# Every restart test again, lazily: the suites of Tests/LiveProcessTests/Restore and Tree run
# with CHPOX_TEST_LAZY=1, which has each `ld-chpox` restart they make take `--lazy` (the process
# runs before its memory is in; TestTools.restartArguments). Run by scripts/test.sh after the
# whole suite, on its build; prints "lazy: N passed, M failed" last.
set -uo pipefail
cd "$(dirname "$0")/.."
suites=$(grep -ho '@Suite[^{]*struct [A-Za-z]*' Tests/LiveProcessTests/Restore/*.swift Tests/LiveProcessTests/Tree/*.swift \
  | sed 's/.*struct //' | sort -u | paste -sd '|')
log=.build/lazy-tests-output.txt
CHPOX_TEST_LAZY=1 swift test --skip-build --disable-xctest --filter "$suites" 2>&1 | tee "$log" | grep -v -E '^(◇|↳) '
status=${PIPESTATUS[0]}
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -v -c 'Test run with' || true)
failed=$(grep -E '^✘ Test .* failed' "$log" | grep -v -c 'Test run with' || true)
if [ "$passed" -eq 0 ]; then failed=$((failed + 1)); fi
echo "lazy: $passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$passed" -gt 0 ]
