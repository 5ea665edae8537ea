#!/usr/bin/env bash
# Installs what chpox needs on a fresh Debian machine of this kind, only when missing:
# the LZ4 and xxHash development packages and pkg-config (Swift finds them through it), and
# nftables (nft: cpx --kill holds connections to peers outside the tree with a rule), and
# redis-server, a real program the live tests checkpoint (its system service is left stopped and
# disabled: the test starts its own server on a free port).
set -euo pipefail

missing=()
for package in liblz4-dev libxxhash-dev pkg-config nftables redis-server; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
        $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
fi
command -v swift >/dev/null || { echo "setup: swift is not on PATH (this machine kind ships it in /opt/swift)"; exit 1; }
