#!/usr/bin/env bash
# The dirty-tracker proofs, and the checkpointer's proof with soft-dirty, on real kernels that have what the host lacks: Debian's 6.12
# (soft-dirty through pagemap and PAGEMAP_SCAN, uffd-wp) and 6.1 (soft-dirty through
# pagemap; its probe must refuse uffd-wp, which needs WP_ASYNC from 6.7). Builds the proof
# statically, boots each kernel under QEMU and runs it there. Then the migration proof: a
# workload checkpointed in one guest restarts in the other (6.12 -> 6.1 and 6.1 -> 6.12), its
# store carried out through a second serial port; its vDSO is proxied (the kernels' differ) and
# its memory and clocks must prove themselves (scripts/qemu/migration-proof.c). Part of
# scripts/test.sh.
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
# Without libcurl (-DCHPOX_NO_S3): Debian has no static libcurl with its dependencies, and the
# guests use local stores.
for product in chpox-inject cpx ld-chpox chpox-restore-stub; do
    swift build --scratch-path .build-static -c release -Xswiftc -static-executable -Xswiftc -DCHPOX_NO_S3 \
        --product "$product" 2>&1 | tail -n 1
done
bin=$(swift build --scratch-path .build-static -c release --show-bin-path)
mkdir -p .build-static/guest
gcc -O2 -static -o .build-static/guest/chpox-dirty-workload Tests/DirtyWorkload/main.c
gcc -O2 -static -pthread -o .build-static/guest/chpox-churn-workload Tests/ChurnWorkload/main.c -lm
gcc -O2 -static -o .build-static/guest/migration-proof scripts/qemu/migration-proof.c

# Prints a guest's probe and PASS/FAIL lines prefixed with `label` and adds its "GUEST N passed,
# M failed" to the totals; a guest that did not finish, or exited non-zero with no failure
# said, is one failure more. Returns non-zero when anything failed.
count_guest() {
    local log=$1 label=$2 status=$3 summary
    grep -E '^(probe|PASS|FAIL|GUEST)' "$log" | sed "s/^/  [$label] /" || true
    summary=$(grep -E '^GUEST [0-9]+ passed' "$log" | tail -n 1 || true)
    if [ -z "$summary" ]; then
        echo "  [$label] FAIL the guest did not finish (status $status); its console:"
        tail -n 20 "$log" | sed "s/^/    /"
        failed=$((failed + 1))
        return 1
    fi
    passed=$((passed + $(echo "$summary" | awk '{print $2}')))
    failed=$((failed + $(echo "$summary" | awk '{print $4}')))
    [ "$(echo "$summary" | awk '{print $4}')" -eq 0 ] || return 1
    [ "$status" -eq 0 ] || { echo "  [$label] FAIL exit status $status"; failed=$((failed + 1)); return 1; }
}

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
    count_guest "$log" "$kernel" "$status" || true
done

guest_files=(--file "$bin/cpx" --file "$bin/chpox-inject" --file "$bin/ld-chpox" --file "$bin/chpox-restore-stub"
    --file .build-static/guest/chpox-dirty-workload)
for from in 6.12 6.1; do
    to=$([ "$from" = 6.12 ] && echo 6.1 || echo 6.12)
    tar=.build-static/guest/migrate-$from.tar
    rm -f "$tar"
    echo "qemu: migration, checkpointed under Linux $from, restarted under $to"
    set +e
    bash scripts/qemu-run.sh --kernel "$from" --mem 1024 --smp 2 --timeout 180 --serial-out "$PWD/$tar" \
        "${guest_files[@]}" -- .build-static/guest/migration-proof checkpoint /dev/ttyS1 \
        >.build-static/guest/migrate-$from.log 2>&1
    status=$?
    set -e
    count_guest .build-static/guest/migrate-$from.log "$from checkpoint" "$status" || continue
    set +e
    bash scripts/qemu-run.sh --kernel "$to" --mem 1024 --smp 2 --timeout 180 --file "$tar" \
        "${guest_files[@]}" -- .build-static/guest/migration-proof restart "/bin/migrate-$from.tar" \
        >.build-static/guest/migrate-$from-$to.log 2>&1
    status=$?
    set -e
    count_guest .build-static/guest/migrate-$from-$to.log "$from -> $to restart" "$status" || true
done
echo "qemu: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
