#!/usr/bin/env bash
# Installs what chpox needs on a fresh Debian machine of this kind, only when missing:
# the LZ4 and xxHash development packages and pkg-config (Swift finds them through it),
# libcurl (OpenSSL flavour) and OpenSSL's libcrypto for the S3 client (Sources/ObjectStore),
# and nftables (nft: cpx --kill holds connections to peers outside the tree with a rule).
# (The S3 tests' Ceph packages are scripts/ceph.sh's to install.)
# With --tests (scripts/test.sh), also what the live tests run besides: redis-server, a real
# program they checkpoint (its system service is left stopped and disabled: the test starts its
# own), and a Python virtual environment in .build/jupyter-venv with ipykernel, jupyter_client
# (pyzmq comes with them) and numpy from PyPI, for the Jupyter kernel proof
# (Tests/LiveProcessTests/Restore/JupyterKernelTests).
set -euo pipefail
cd "$(dirname "$0")/.."

tests=false
[ "${1:-}" = "--tests" ] && tests=true
missing=()
packages=(liblz4-dev libxxhash-dev pkg-config libcurl4-openssl-dev libssl-dev nftables)
$tests && packages+=(python3-venv redis-server)
for package in "${packages[@]}"; do
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

if $tests; then
    # Checked by importing: a venv whose install was cut short is completed, a complete one
    # costs one Python start. Debian's python3, as the tests' other Python programs use.
    venv=.build/jupyter-venv
    if ! "$venv/bin/python" -c "import ipykernel, jupyter_client, zmq, numpy" 2>/dev/null; then
        echo "setup: installing ipykernel, jupyter_client and numpy into $venv"
        [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --disable-pip-version-check ipykernel jupyter_client numpy
    fi
fi
