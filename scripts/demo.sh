#!/usr/bin/env bash
# The README's main command: sets up, builds (release) and runs the live demo on the default
# store ($CHPOX_STORE, else $XDG_STATE_HOME/chpox, else ~/.local/state/chpox):
#   1. starts chpox-sample (a counter that prints a checksum of its memory every 0.3 s),
#   2. checkpoints it with `cpx --interval 1` for 4 generations,
#   3. kills it, shows `dumpinfo --chain`, generation 1 (`--generation 1`) and what changed
#      from generation 1 to 3 (`--diff 1 3`),
#   4. restarts generation 1 with `ld-chpox --generation 1`: the program goes on from the tick
#      it had reached then, with the same checksum (its output file is cut back to that point),
#   5. stops it and verifies the store.
# `scripts/demo.sh --store-tour` runs the store tour instead (chpox-demo, simulated memory).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${1:-}" = "--store-tour" ]; then
    shift
    swift build -c release --product chpox-demo 2>&1 | tail -n 1
    exec .build/release/chpox-demo "$@"
fi
for product in cpx ld-chpox dumpinfo chpox-inject chpox-restore-stub chpox-sample; do
    swift build -c release --product "$product" 2>&1 | grep -E "error|warning: unre" || true
done
bin=$(swift build -c release --show-bin-path)
chain="sample-$(date +%Y%m%d-%H%M%S)"
work=$(mktemp -d /tmp/chpox-demo.XXXXXX)
log="$work/sample.out"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() { [ -n "${sample:-}" ] && kill -9 "$sample" 2>/dev/null; [ -n "${restarted:-}" ] && kill -9 "$restarted" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

say "1. starting chpox-sample (it prints a tick and a checksum of its 4 MiB buffer)"
"$bin/chpox-sample" >"$log" 2>&1 </dev/null &
sample=$!
sleep 1
tail -n 2 "$log"

say "2. cpx --interval 1 --count 4 --name $chain $sample"
"$bin/cpx" --interval 1 --count 4 --name "$chain" "$sample"

say "3. killing it (pid $sample); its last lines:"
kill -9 "$sample"; wait "$sample" 2>/dev/null || true; sample=""
tail -n 3 "$log"

say "dumpinfo --chain --name $chain"
"$bin/dumpinfo" --chain --name "$chain"

say "dumpinfo --name $chain --generation 1 (the start of it)"
"$bin/dumpinfo" --name "$chain" --generation 1 | head -n 22

say "dumpinfo --name $chain --diff 1 3"
"$bin/dumpinfo" --name "$chain" --diff 1 3 | head -n 12

say "4. ld-chpox --name $chain --generation 1"
restarted=$("$bin/ld-chpox" --name "$chain" --generation 1)
echo "restarted as pid $restarted"
sleep 2
echo "its output file now ends (cut back to generation 1, then written on by the restarted process):"
tail -n 6 "$log"

say "5. stopping it; dumpinfo --verify --deep"
kill -9 "$restarted" 2>/dev/null || true; restarted=""
"$bin/dumpinfo" --verify --deep | tail -n 3
echo
echo "The chain stays in the store ($chain): ld-chpox --name $chain --generation N restarts any generation again,"
echo "ld-chpox --name $chain --core FILE writes one for gdb; cpx gc --name $chain --keep-last 1 prunes it."
