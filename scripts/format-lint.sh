#!/usr/bin/env bash
# The formatter the project keeps: `swift format lint --strict` over Sources, Tests and
# Package.swift with the repository's .swift-format (line length 120). Part of the test command.
# To fix what it reports: `swift format format -i -r Sources Tests Package.swift`.
set -uo pipefail
cd "$(dirname "$0")/.."
paths=(Sources Tests Package.swift)
if ! command -v swift >/dev/null; then echo "format: swift is not on PATH"; echo "format: 0 passed, 1 failed"; exit 1; fi
report=$(swift format lint --strict --parallel -r "${paths[@]}" 2>&1)
status=$?
if [ "$status" -eq 0 ] && [ -z "$report" ]; then
    echo "format: every Swift file follows .swift-format"
    echo "format: 1 passed, 0 failed"
    exit 0
fi
echo "$report" | head -n 40
echo "format: $(echo "$report" | grep -c 'warning\|error') findings (fix: swift format format -i -r ${paths[*]})"
echo "format: 0 passed, 1 failed"
exit 1
