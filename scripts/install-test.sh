#!/usr/bin/env bash
# Tests the Makefile's install step: `make install` into a temporary DESTDIR (debug, so it reuses
# the test build), then what it put there (the five programs, man pages that render, completions
# for bash, zsh and fish), then that `make uninstall` leaves no file behind.
# Prints one PASS/FAIL line per check and "install: N passed, M failed" last; exits 1 on a failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

passed=0
failed=0
check() { # check DESCRIPTION COMMAND...: runs the command quietly and reports it
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "PASS $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}
finish() {
    echo "install: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

tools=(cpx ld-chpox dumpinfo)
programs=("${tools[@]}" chpox-inject chpox-restore-stub)
# An option each man page must show, proof that it holds the tool's real options.
declare -A option=([cpx]=--interval [ld-chpox]=--generation [dumpinfo]=--chain)

# The step needs make; rendering needs man (man-db) or groff. Installed when missing, as
# scripts/setup.sh installs its packages.
missing=()
command -v make >/dev/null || missing+=(make)
command -v man >/dev/null || command -v groff >/dev/null || missing+=(groff-base)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-test: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The pages are mdoc. LC_ALL=C renders ASCII hyphens (not U+2010) and a wide page keeps options
# unbroken, so grep finds them as typed.
render() {
    if command -v man >/dev/null; then
        LC_ALL=C MANWIDTH=200 man -P cat -l "$1"
    else
        LC_ALL=C groff -mandoc -Tascii -rLL=200n "$1" | sed 's/.\x08//g'
    fi
}
shows() { grep -qwF -- "$2" <<<"$1" && grep -qF -- "$3" <<<"$1"; } # shows TEXT WORD OPTION
parses() { test -s "$1" && bash -n "$1"; }                            # a non-empty bash script

destdir=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$destdir" "$log"' EXIT
prefix=$destdir/usr/local

start=$SECONDS
if make install CONFIGURATION=debug DESTDIR="$destdir" >"$log" 2>&1; then
    echo "PASS make install CONFIGURATION=debug DESTDIR=... ($((SECONDS - start)) s)"
    passed=$((passed + 1))
else
    echo "FAIL make install CONFIGURATION=debug DESTDIR=...; its last lines:"
    tail -n 20 "$log" | sed 's/^/  /'
    failed=$((failed + 1))
    finish
fi

for program in "${programs[@]}"; do
    check "bin/$program is an executable file" test -f "$prefix/bin/$program" -a -x "$prefix/bin/$program"
done
for tool in "${tools[@]}"; do
    check "$tool --help exits 0" "$prefix/bin/$tool" --help
done

for tool in "${tools[@]}"; do
    page=$prefix/share/man/man1/$tool.1
    if [ -f "$page" ] && text=$(render "$page" 2>/dev/null) && [ -n "$text" ]; then
        echo "PASS man page $tool.1 renders"
        passed=$((passed + 1))
        check "man page $tool.1 names $tool and shows ${option[$tool]}" \
            shows "$text" "$tool" "${option[$tool]}"
    else
        echo "FAIL man page $tool.1 is missing or does not render"
        failed=$((failed + 1))
    fi
done

for tool in "${tools[@]}"; do
    check "bash completion for $tool exists and parses (bash -n)" parses "$prefix/share/bash-completion/completions/$tool"
    check "zsh completion for $tool exists" test -s "$prefix/share/zsh/site-functions/_$tool"
    check "fish completion for $tool exists" test -s "$prefix/share/fish/vendor_completions.d/$tool.fish"
done

# Uninstall needs no build; afterwards only (shared) directories may remain.
check "make uninstall" make uninstall DESTDIR="$destdir"
left=$(find "$destdir" ! -type d)
if [ -z "$left" ]; then
    echo "PASS make uninstall left no file"
    passed=$((passed + 1))
else
    echo "FAIL make uninstall left files:"
    echo "$left" | sed 's/^/  /'
    failed=$((failed + 1))
fi
finish
