#!/usr/bin/env bash
# Prepares QEMU guests on Debian's own kernels (which have CONFIG_MEM_SOFT_DIRTY, unlike the host's):
# installs qemu-system-x86, busybox-static, cpio, xz-utils and zstd when missing, and downloads the
# newest Debian 6.12 and 6.1 kernel images that apt lists, keeping only their /boot (vmlinuz, config)
# plus the uncompressed vmlinux unpacked from vmlinuz, which boots faster.
# Idempotent and quiet when everything is already there. See scripts/qemu/README.md.
#
#   scripts/qemu-setup.sh                  set up both kernels (resolving the newest packages again)
#                                          and print "VERSION PATH-TO-VMLINUZ" for each
#   scripts/qemu-setup.sh --kernel 6.12    set up (only if missing) and print that kernel's vmlinuz path
#
# Cache: $CHPOX_QEMU_CACHE, default $HOME/.cache/chpox-qemu. Progress goes to stderr; stdout
# carries only the paths.
set -Eeuo pipefail

cache=${CHPOX_QEMU_CACHE:-${HOME:-/root}/.cache/chpox-qemu}
default_kernels=(6.12 6.1)
only_kernel=""

usage() {
    echo "usage: $0 [--kernel MAJOR.MINOR]" >&2
    exit 2
}
while (($#)); do
    case "$1" in
    --kernel | --print)
        (($# >= 2)) || usage
        only_kernel=$2
        shift 2
        ;;
    --kernel=* | --print=*) only_kernel=${1#*=}; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) usage ;;
    esac
done
if [ -n "$only_kernel" ] && ! [[ $only_kernel =~ ^[0-9]+\.[0-9]+$ ]]; then
    echo "qemu-setup: --kernel wants MAJOR.MINOR, such as 6.12 or 6.1 (got '$only_kernel')" >&2
    exit 2
fi

log() { echo "qemu-setup: $*" >&2; }
trap 'log "failed: line $LINENO: $BASH_COMMAND"' ERR

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_update() {
    ((apt_updated)) && return 0
    log "apt-get update"
    $sudo apt-get update -qq >&2
    apt_updated=1
}

mkdir -p "$cache/kernels"
exec 9>"$cache/.lock"
flock 9 # runs at once (parallel tests) would fight over apt and download into the same place
rm -rf "$cache"/.download.* # left by an interrupted run

# --- host packages ---------------------------------------------------------------------------
missing=()
for package in qemu-system-x86 busybox-static cpio xz-utils zstd; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernels ---------------------------------------------------------------------------------
# The newest plain amd64 unsigned image of MAJOR.MINOR that apt knows: linux-image-6.1.0-57-amd64-unsigned,
# linux-image-6.12.117+deb12-amd64-unsigned (not -cloud-, not -rt-).
newest_package() {
    local version=$1 regex
    regex="^linux-image-${version//./\\.}\\.[0-9]+(-[0-9]+|\\+deb[0-9]+)-amd64-unsigned\$"
    apt-cache search --names-only "$regex" 2>/dev/null | awk '{print $1}' | sort -V | tail -n 1
}

# Downloads PACKAGE's .deb into a fresh directory under the cache and prints that directory.
download_package() {
    local package=$1 work
    log "downloading $package"
    work=$(mktemp -d "$cache/.download.XXXXXX")
    # apt drops to the _apt user for downloads; it cannot enter root's home, so download as ourselves.
    if (cd "$work" && apt-get download -qq -o APT::Sandbox::User="$(id -un)" "$package" >&2); then
        echo "$work"
    else
        rm -rf "$work"
        return 1
    fi
}

# Extracts the .deb in WORK (only ./boot: the guests need no modules, everything they use is built
# in, and modules are most of the size) into $cache/kernels/PACKAGE.
extract_package() {
    local package=$1 work=$2 dir="$cache/kernels/$1"
    mkdir -p "$work/root"
    dpkg-deb --fsys-tarfile "$work"/*.deb | tar -x -C "$work/root" ./boot
    compgen -G "$work/root/boot/vmlinuz-*" >/dev/null || { log "$package has no boot/vmlinuz-*"; return 1; }
    unpack_vmlinux "$work/root/boot"
    rm -rf "$dir"
    mv "$work/root" "$dir"
    rm -rf "$work"
    touch "$dir/.complete"
}

# Makes $cache/linux-VERSION point at the newest package of VERSION, fetching it when needed.
resolve_kernel() {
    local version=$1 package
    package=$(newest_package "$version")
    if [ -z "$package" ]; then
        apt_update
        package=$(newest_package "$version")
    fi
    if [ -z "$package" ]; then
        log "apt lists no linux-image-$version.*-amd64-unsigned package"
        return 1
    fi
    if [ ! -e "$cache/kernels/$package/.complete" ]; then
        local work
        if ! work=$(download_package "$package"); then
            # The lists may name a version the mirror no longer has.
            ((apt_updated)) && return 1
            apt_update
            package=$(newest_package "$version")
            work=$(download_package "$package")
        fi
        extract_package "$package" "$work"
    fi
    if [ "$(readlink "$cache/linux-$version" 2>/dev/null)" != "kernels/$package" ]; then
        ln -sfn "kernels/$package" "$cache/linux-$version"
        log "linux-$version is $package"
    fi
}

# Unpacks the ELF kernel (vmlinux) from vmlinuz next to it, once. Debian's kernels are built with
# CONFIG_PVH, so QEMU boots that ELF directly and skips the in-guest decompression, which under TCG
# costs seconds per boot (about 2 s for zstd on 6.12, 5 s for xz on 6.1). qemu-run.sh falls back to
# vmlinuz when the unpacking fails.
unpack_vmlinux() {
    local boot=$1 vmlinuz vmlinux magic offset images
    images=("$boot"/vmlinuz-*)
    vmlinuz=${images[0]}
    [ -e "$vmlinuz" ] || return 0
    vmlinux=$boot/vmlinux-${vmlinuz##*/vmlinuz-}
    [ -e "$vmlinux" ] || [ -e "$boot/.no-vmlinux" ] && return 0
    for magic in 'zstd:\x28\xb5\x2f\xfd' 'xz:\xfd7zXZ\x00' 'gzip:\x1f\x8b\x08'; do
        offset=$(LC_ALL=C grep -obUaP "${magic#*:}" "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
        [ -n "$offset" ] || continue
        # The payload is followed by other data, so the decompressor complains at its end: check the result instead.
        tail -c +$((offset + 1)) "$vmlinuz" | "${magic%%:*}" -dcq >"$vmlinux.tmp" 2>/dev/null || true
        if [ "$(head -c 4 "$vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
            mv "$vmlinux.tmp" "$vmlinux"
            return 0
        fi
    done
    rm -f "$vmlinux.tmp"
    log "could not unpack vmlinux from $vmlinuz; guests will boot the compressed image (slower)"
    touch "$boot/.no-vmlinux"
}

vmlinuz_of() {
    local images path
    images=("$cache/linux-$1"/boot/vmlinuz-*)
    path=${images[0]}
    if [ ! -e "$path" ] || [ ! -e "$cache/linux-$1/.complete" ]; then return 1; fi
    unpack_vmlinux "$cache/linux-$1/boot" # for caches made before the unpacking existed
    echo "$path"
}

if [ -n "$only_kernel" ]; then
    if ! vmlinuz_of "$only_kernel" >/dev/null; then resolve_kernel "$only_kernel"; fi
    vmlinuz_of "$only_kernel"
else
    for version in "${default_kernels[@]}"; do
        resolve_kernel "$version"
        echo "$version $(vmlinuz_of "$version")"
    done
    # Drop kernels that no linux-VERSION link points at any more.
    for dir in "$cache"/kernels/*; do
        [ -e "$dir" ] || continue
        used=0
        for link in "$cache"/linux-*; do
            [ "$(readlink "$link")" = "kernels/${dir##*/}" ] && used=1
        done
        ((used)) || rm -rf "$dir"
    done
fi
