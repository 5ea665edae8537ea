#!/usr/bin/env bash
# Runs one program inside a QEMU guest booting one of Debian's kernels (set up by qemu-setup.sh),
# streams the guest console to stdout, and exits with the program's exit status.
#
#   scripts/qemu-run.sh --kernel 6.12|6.1 [--mem MiB] [--smp N] [--timeout SECONDS]
#                       [--file /host/path]... [--env NAME=VALUE]... [--append "KERNEL ARGS"]
#                       [--serial-out /host/file] -- /path/to/binary [args...]
#
# The guest is a busybox initramfs built afresh in a temporary directory: /init mounts proc, sys,
# devtmpfs, /dev/shm and a tmpfs on /tmp, then runs /bin/BINARY ARGS as root in /tmp with its
# output on the console, and prints "CHPOX-GUEST-EXIT <status>" before powering off. Files named
# with --file land in the guest's /bin too. Dynamically linked programs get their shared libraries
# copied along (found with ldd); fully static ones need nothing. /proc/sys/vm is left as the kernel
# sets it (transparent_hugepage=always is on the command line). No kernel modules are loaded.
# --serial-out gives the guest a second serial port, /dev/ttyS1, whose output lands in the host
# file: a way out for bytes (a store), since the guest shares nothing else with the host (set it
# raw first: stty -F /dev/ttyS1 raw -echo).
#
# Exit status: the program's; 124 when the timeout expired; 125 when the guest ended without
# the marker (kernel panic, crash of /init); 2 for usage errors.
# Defaults: --mem 1024, --smp 2, --timeout 600. Acceleration is TCG (-cpu max); set
# CHPOX_QEMU_ACCEL=kvm to use KVM where /dev/kvm works. The kernel boots from the vmlinux that
# qemu-setup.sh unpacked (PVH entry); CHPOX_QEMU_VMLINUZ=1 boots the compressed vmlinuz instead.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
kernel=""
mem=1024
smp=2
timeout_s=600
append_extra=""
files=()
envs=()
serial_out=""

usage() {
    sed -n '5,7p' "$0" | sed 's/^# \{0,1\}/usage: /;2,$s/^usage: /       /' >&2
    exit 2
}
need_arg() { (($1 >= 2)) || { echo "qemu-run: $2 needs a value" >&2; usage; }; }
while (($#)); do
    case "$1" in
    --kernel) need_arg $# "$1"; kernel=$2; shift 2 ;;
    --mem) need_arg $# "$1"; mem=$2; shift 2 ;;
    --smp) need_arg $# "$1"; smp=$2; shift 2 ;;
    --timeout) need_arg $# "$1"; timeout_s=$2; shift 2 ;;
    --file) need_arg $# "$1"; files+=("$2"); shift 2 ;;
    --env) need_arg $# "$1"; envs+=("$2"); shift 2 ;;
    --append) need_arg $# "$1"; append_extra=$2; shift 2 ;;
    --serial-out) need_arg $# "$1"; serial_out=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "qemu-run: unknown option '$1'" >&2; usage ;;
    esac
done
(($# >= 1)) || { echo "qemu-run: no program given after --" >&2; usage; }
[ -n "$kernel" ] || { echo "qemu-run: --kernel is required (6.12 or 6.1)" >&2; usage; }
[[ $mem =~ ^[0-9]+$ && $smp =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] ||
    { echo "qemu-run: --mem, --smp and --timeout take whole numbers" >&2; exit 2; }
for e in ${envs[@]+"${envs[@]}"}; do
    [[ $e =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "qemu-run: --env wants NAME=VALUE (got '$e')" >&2; exit 2; }
done
program=$1
shift
for f in "$program" ${files[@]+"${files[@]}"}; do
    [ -f "$f" ] || { echo "qemu-run: no such file: $f" >&2; exit 2; }
done

vmlinuz=$("$here/qemu-setup.sh" --kernel "$kernel")
# The uncompressed ELF kernel boots through PVH and saves seconds of decompression under TCG.
image=$(dirname "$vmlinuz")/vmlinux-${vmlinuz##*/vmlinuz-}
[ -e "$image" ] && [ -z "${CHPOX_QEMU_VMLINUZ:-}" ] || image=$vmlinuz
busybox=$(command -v busybox || echo /bin/busybox)
[ -x "$busybox" ] || { echo "qemu-run: busybox is missing (qemu-setup.sh installs busybox-static)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/chpox-qemu.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc}
cp "$busybox" "$root/bin/busybox"
# The kernel opens /dev/console for /init before anything is mounted; make the node when we can
# (root), else /init reopens the console once devtmpfs is up.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
mknod -m 666 "$root/dev/null" c 1 3 2>/dev/null || true

# Copies a host file into the guest's /bin, and, when dynamically linked, its loader and libraries
# at the same paths as on the host.
add_file() {
    local src=$1 name
    name=$(basename "$src")
    if [ -e "$root/bin/$name" ]; then
        echo "qemu-run: two files named $name for the guest's /bin" >&2
        exit 2
    fi
    cp -L "$src" "$root/bin/$name"
    chmod 755 "$root/bin/$name"
    if command -v readelf >/dev/null && readelf -l "$src" 2>/dev/null | grep -q 'program interpreter'; then
        local lib
        while read -r lib; do
            if [ -z "$lib" ] || [ ! -e "$lib" ]; then continue; fi
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done < <(ldd "$src" 2>/dev/null | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
    fi
}
add_file "$program"
for f in ${files[@]+"${files[@]}"}; do add_file "$f"; done

# Single-quotes a word for the guest's shell.
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
command_line="/bin/$(quote "$(basename "$program")")"
for arg in "$@"; do command_line+=" $(quote "$arg")"; done
exports=""
for e in ${envs[@]+"${envs[@]}"}; do exports+="export ${e%%=*}=$(quote "${e#*=}")"$'\n'; done

cat >"$root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/shm /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sf /proc/self/fd /dev/fd
echo "chpox-guest: \$(uname -r), \$(nproc) cpus, \$(awk '/MemTotal/ {print \$2/1024 " MiB"}' /proc/meminfo)"
$exports
cd /tmp
$command_line
status=\$?
echo
echo "CHPOX-GUEST-EXIT \$status"
sync
poweroff -f
EOF
chmod 755 "$root/init"
# Uncompressed: the programs are large and the guest unpacks an uncompressed archive fastest.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$work/initramfs.cpio"

accel=${CHPOX_QEMU_ACCEL:-tcg}
if [ "$accel" = tcg ]; then
    accel_args=(-accel "tcg,thread=multi" -cpu max)
else
    accel_args=(-accel "$accel" -cpu host)
fi
qemu=(qemu-system-x86_64 -nodefaults -no-user-config -machine q35 "${accel_args[@]}"
    -smp "$smp" -m "$mem" -display none -monitor none -serial stdio -no-reboot
    ${serial_out:+-serial "file:$serial_out"}
    -kernel "$image" -initrd "$work/initramfs.cpio"
    -append "console=ttyS0 quiet panic=-1 transparent_hugepage=always $append_extra")

echo "qemu-run: booting $(basename "$image") ($accel, ${smp} cpus, ${mem} MiB, timeout ${timeout_s}s)" >&2
log=$work/console.log
set +e
# No stdin: qemu must never wait on a terminal (CI has none). The console's CRs are dropped.
timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 | sed -u 's/\r$//' | tee "$log"
statuses=("${PIPESTATUS[@]}")
set -e
qemu_status=${statuses[0]}

marker=$(grep -aoE '^CHPOX-GUEST-EXIT [0-9]+$' "$log" | tail -n 1 || true)
if [ -n "$marker" ]; then
    exit "${marker#CHPOX-GUEST-EXIT }"
fi
if [ "$qemu_status" -eq 124 ] || [ "$qemu_status" -eq 137 ]; then
    echo "qemu-run: timed out after ${timeout_s}s without the guest's exit marker" >&2
    exit 124
fi
if grep -aq 'Kernel panic' "$log"; then
    echo "qemu-run: the guest kernel panicked (see the console output above)" >&2
else
    echo "qemu-run: the guest ended without its exit marker (qemu exit status $qemu_status)" >&2
fi
exit 125
