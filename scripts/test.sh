#!/usr/bin/env bash
# The README's test command, and what CI runs: sets up, builds everything and runs every test
# (unit, crash-safety with SIGKILLed writers, corruption, GC, security, and the bounded fuzzer),
# then the install step and the QEMU guests.
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
if [ "$passed" -eq 0 ] && [ "$status" -eq 0 ]; then echo "no test ran"; exit 1; fi

# The install step (make install/uninstall into a temporary DESTDIR), on the debug build above.
ilog=.build/install-output.txt
set +e
bash scripts/install-test.sh 2>&1 | tee "$ilog"
istatus=${PIPESTATUS[0]}
set -e
isummary=$(grep -E '^install: [0-9]+ passed, [0-9]+ failed' "$ilog" | tail -n 1 || true)
ipassed=$(echo "$isummary" | awk '{print $2}')
ifailed=$(echo "$isummary" | awk '{print $4}')
if [ -z "$isummary" ]; then ipassed=0; ifailed=1; fi

# The dirty trackers on kernels the host is not: Debian's 6.12 and 6.1 under QEMU.
qlog=.build/qemu-output.txt
set +e
bash scripts/qemu-tests.sh 2>&1 | tee "$qlog"
qstatus=${PIPESTATUS[0]}
set -e
qsummary=$(grep -E '^qemu: [0-9]+ passed, [0-9]+ failed' "$qlog" | tail -n 1 || true)
qpassed=$(echo "$qsummary" | awk '{print $2}')
qfailed=$(echo "$qsummary" | awk '{print $4}')
if [ -z "$qsummary" ]; then qpassed=0; qfailed=1; fi
echo "$((passed + ipassed + qpassed)) passed, $((failed + ifailed + qfailed)) failed"
[ "$status" -eq 0 ] && [ "$istatus" -eq 0 ] && [ "$qstatus" -eq 0 ]
