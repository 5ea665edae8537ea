#!/usr/bin/env bash
# The dirty-tracker proofs, and the checkpointer's proof with soft-dirty, on real kernels that have what the host lacks: Debian's 6.12
# (soft-dirty through pagemap and PAGEMAP_SCAN, uffd-wp) and 6.1 (soft-dirty through
# pagemap; its probe must refuse uffd-wp, which needs WP_ASYNC from 6.7). Builds the proof
# statically, boots each kernel under QEMU and runs it there. Part of scripts/test.sh.
# Prints one "PASS/FAIL" line per check and "qemu: N passed, M failed" last.
# CHPOX_DEBUG=1 in the guest (qemu-run.sh --env) prints every proof round.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${CHPOX_QEMU_ROUNDS:-50}
generations=${CHPOX_QEMU_GENERATIONS:-8}

bash scripts/qemu-setup.sh >/dev/null
echo "qemu: building the static proof"
swift build --scratch-path .build-static -c release -Xswiftc -static-executable -Xswiftc -DCHPOX_NO_S3 \
    --product chpox-tracker-proof 2>&1 | tail -n 1
swift build --scratch-path .build-static -c release -Xswiftc -static-executable -Xswiftc -DCHPOX_NO_S3 \
    --product chpox-inject 2>&1 | tail -n 1
bin=$(swift build --scratch-path .build-static -c release --show-bin-path)
mkdir -p .build-static/guest
gcc -O2 -static -o .build-static/guest/chpox-dirty-workload Tests/DirtyWorkload/main.c
gcc -O2 -static -pthread -o .build-static/guest/chpox-churn-workload Tests/ChurnWorkload/main.c -lm

passed=0
failed=0
for kernel in 6.12 6.1; do
    log=.build-static/guest/$kernel.log
    echo "qemu: Linux $kernel"
    set +e
    bash scripts/qemu-run.sh --kernel "$kernel" --mem 2048 --smp 2 --timeout 900 \
        --file "$bin/chpox-inject" --file .build-static/guest/chpox-dirty-workload --file .build-static/guest/chpox-churn-workload \
        -- "$bin/chpox-tracker-proof" guest /bin/chpox-dirty-workload "$rounds" /bin/chpox-churn-workload "$generations" >"$log" 2>&1
    status=$?
    set -e
    grep -E '^(probe|PASS|FAIL|GUEST)' "$log" | sed "s/^/  [$kernel] /" || true
    summary=$(grep -E '^GUEST [0-9]+ passed' "$log" | tail -n 1 || true)
    if [ -z "$summary" ]; then
        echo "  [$kernel] FAIL the guest did not finish (status $status); its console:"
        tail -n 20 "$log" | sed "s/^/    /"
        failed=$((failed + 1))
        continue
    fi
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
    [ "$status" -eq 0 ] || [ "$(echo "$summary" | awk '{print $4}')" -gt 0 ] || { echo "  [$kernel] FAIL exit status $status"; failed=$((failed + 1)); }
done
echo "qemu: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
