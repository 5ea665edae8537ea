#!/usr/bin/env bash
# The README's test command, and what CI runs: sets up, builds everything and runs every test
# (unit, crash-safety with SIGKILLed writers, corruption, GC, security, the bounded fuzzer, and
# the S3 client against a one-node Ceph that scripts/ceph.sh starts before and stops after),
# then every restart test again with `ld-chpox --lazy`, the formatter's lint, the install step,
# the QEMU guests and CRIU's zdtm tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
swift build --build-tests 2>&1 | tail -n 3
log=.build/test-output.txt
# The S3 tests' Ceph (RGW): started here (installed when missing), stopped when the tests end.
# Should it fail to start, the S3 tests try again themselves and fail with its words.
trap 'bash scripts/ceph.sh stop' EXIT
bash scripts/ceph.sh start || echo "test: scripts/ceph.sh start failed; the S3 tests will say why"
set +e
swift test --skip-build --disable-xctest 2>&1 | tee "$log" | grep -v -E '^(◇|↳) '
status=${PIPESTATUS[0]}
set -e
bash scripts/ceph.sh stop
passed=$(grep -E '^✔ Test .* passed' "$log" | grep -v -c 'Test run with' || true)
failed=$(grep -E '^✘ Test .* failed' "$log" | grep -v -c 'Test run with' || true)
if [ "$passed" -eq 0 ] && [ "$status" -eq 0 ]; then echo "no test ran"; exit 1; fi

# A part that prints "<label>: N passed, M failed" last: run it, and add its counts.
# part LABEL SCRIPT: sets part_passed, part_failed, part_status (a part that printed no
# summary counts as one failure).
part() {
    local label=$1 script=$2 log=.build/$1-output.txt summary
    set +e
    bash "$script" 2>&1 | tee "$log"
    part_status=${PIPESTATUS[0]}
    set -e
    summary=$(grep -E "^$label: [0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1 || true)
    part_passed=$(echo "$summary" | awk '{print $2}')
    part_failed=$(echo "$summary" | awk '{print $4}')
    if [ -z "$summary" ]; then part_passed=0; part_failed=1; fi
}

# Every restart test again with `ld-chpox --lazy` (scripts/lazy-restart-tests.sh).
part lazy scripts/lazy-restart-tests.sh
lpassed=$part_passed lfailed=$part_failed lstatus=$part_status
# The formatter: every Swift file as .swift-format says (swift format lint --strict).
part format scripts/format-lint.sh
fpassed=$part_passed ffailed=$part_failed fstatus=$part_status
# The install step (make install/uninstall into a temporary DESTDIR), on the debug build above.
part install scripts/install-test.sh
ipassed=$part_passed ifailed=$part_failed istatus=$part_status
# The dirty trackers on kernels the host is not: Debian's 6.12 and 6.1 under QEMU.
part qemu scripts/qemu-tests.sh
qpassed=$part_passed qfailed=$part_failed qstatus=$part_status
# CRIU's zdtm tests through chpox, the CI subset, each held to its outcome (scripts/zdtm.sh).
part zdtm scripts/zdtm.sh
zpassed=$part_passed zfailed=$part_failed zstatus=$part_status
# Those of them that stress memory, threads, signals and forks again, restarted with --lazy.
part zdtm-lazy scripts/zdtm-lazy.sh
zlpassed=$part_passed zlfailed=$part_failed zlstatus=$part_status
echo "$((passed + lpassed + fpassed + ipassed + qpassed + zpassed + zlpassed)) passed," \
  "$((failed + lfailed + ffailed + ifailed + qfailed + zfailed + zlfailed)) failed"
[ "$status" -eq 0 ] && [ "$lstatus" -eq 0 ] && [ "$fstatus" -eq 0 ] && [ "$istatus" -eq 0 ] && [ "$qstatus" -eq 0 ] && [ "$zstatus" -eq 0 ] && [ "$zlstatus" -eq 0 ]
