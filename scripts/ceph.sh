#!/usr/bin/env bash
# A one-node Ceph cluster on 127.0.0.1 for the S3 tests (issue 17): one monitor, one memstore
# OSD (in memory, capped), and the RADOS gateway (RGW, Ceph's S3 server), with no auth between
# them and no systemd: the daemons are plain processes whose pid files, logs and data live in
# one directory (.build/ceph, or $CHPOX_CEPH_DIR).
#
#   scripts/ceph.sh start    installs Debian's ceph-mon, ceph-osd and radosgw when missing,
#                            starts the cluster (or reuses the one running there) and writes
#                            the gateway's endpoint and an S3 user's keys to DIR/s3.env
#                            (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#                            AWS_REGION), the file the tests read
#   scripts/ceph.sh stop     kills every daemon and removes the directory
#   scripts/ceph.sh status   says whether it runs, and where
#   scripts/ceph.sh restart-rgw
#                            stops the gateway (SIGTERM) and starts it again on the same port,
#                            the monitor and the OSD left running (the memstore OSD keeps its
#                            objects only while it runs): the fault tests' "RGW restarted"
#
# Nothing of the machine's own Ceph is used or touched (/etc/ceph, /var/lib/ceph): every
# command gets DIR/ceph.conf. Ports are picked free at start, so clusters of several
# worktrees run side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(realpath -m "${CHPOX_CEPH_DIR:-.build/ceph}")
conf=$dir/ceph.conf
env_file=$dir/s3.env
daemons=(mon.a osd.0 client.rgw.a)
# The memstore OSD keeps every object in memory: this caps it (the tests store a few tens of
# MiB; the machine is shared).
memstore_bytes=$((1024 * 1024 * 1024))

fail() {
    echo "ceph.sh: $1" >&2
    local log
    for log in "${@:2}"; do
        [ -f "$log" ] || continue
        echo "--- last lines of $log:" >&2
        tail -n 15 "$log" >&2
    done
    exit 1
}

install_packages() {
    local missing=() package sudo=""
    for package in ceph-mon ceph-osd radosgw ceph-common; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    echo "ceph.sh: installing ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The packages enable systemd units for the machine's own cluster; there is none here.
}

pid_of() { cat "$dir/run/$1.pid" 2>/dev/null || true; }

alive() {
    local pid
    pid=$(pid_of "$1")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# The gateway answers HTTP (an anonymous request: any status will do). Bash's /dev/tcp, not
# curl, which a fresh machine may lack.
rgw_answers() {
    local port answer
    port=$(sed -n 's|^AWS_ENDPOINT_URL=http://127.0.0.1:||p' "$env_file" 2>/dev/null)
    [ -n "$port" ] || return 1
    answer=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && printf 'HEAD / HTTP/1.0\r\n\r\n' >&3 && head -c 5 <&3" 2>/dev/null) || return 1
    [ "$answer" = "HTTP/" ]
}

running() {
    local daemon
    for daemon in "${daemons[@]}"; do alive "$daemon" || return 1; done
    rgw_answers
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    local daemon pid
    for daemon in "${daemons[@]}"; do
        pid=$(pid_of "$daemon")
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    done
    # A daemon must be gone before its data is removed under it.
    for daemon in "${daemons[@]}"; do
        pid=$(pid_of "$daemon")
        while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    done
    rm -rf "$dir"
}

# `ceph` with the cluster's configuration, bounded: a monitor that is not up yet makes it wait.
cluster() { timeout 20 ceph -c "$conf" --connect-timeout 15 "$@"; }

start() {
    install_packages
    if running; then
        echo "ceph.sh: reusing the cluster in $dir ($(grep AWS_ENDPOINT_URL "$env_file"))"
        return 0
    fi
    [ -d "$dir" ] && stop # what is left of a cluster that died: start afresh
    local began fsid mon_port rgw_port uuid osd_id access secret attempt
    began=$EPOCHREALTIME
    mkdir -p "$dir"/{run,mon.a,osd.0}
    chmod 700 "$dir"
    fsid=$(cat /proc/sys/kernel/random/uuid)
    mon_port=$(free_port)
    rgw_port=$(free_port)
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
ms bind msgr1 = false
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
# Without keys there is no secure mode: radosgw asks the monitor for it by default.
ms mon client mode = crc
# A daemon or command that cannot reach the monitor gives up instead of waiting 5 minutes.
client mount timeout = 30
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/\$name.log
keyring = $dir/keyring
crash dir = $dir/crash
# One OSD holds every placement group alone.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
# Each map change (an OSD's boot, each of the gateway's pools) waits out the proposal
# interval, 1 s by default: about 10 s of the start. One monitor has nobody to batch with.
paxos propose interval = 0.01
paxos min wait = 0.001
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $dir/mon.a
[osd.0]
osd data = $dir/osd.0
osd objectstore = memstore
memstore device bytes = $memstore_bytes
osd max object name len = 256
osd max object namespace len = 64
[client.rgw.a]
# tcp_nodelay: without it the gateway sends a response's body after its headers only once the
# client has acknowledged them, which the client delays by 40 ms: every GET with a body and every
# error with one took 40 ms more (seen by Benchmarks' S3Bench; AWS's S3 has no such stall).
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $dir/rgw.a
rgw dns name = 127.0.0.1
# Deleted objects' data goes within a minute (RGW waits two hours by default), so that a cluster
# reused by several test runs does not fill its memstore OSD.
rgw gc obj min wait = 30
rgw gc processor period = 30
EOF
    touch "$dir/keyring"
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null ||
        fail "monmaptool could not write $dir/monmap"
    ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" >"$dir/mkfs.log" 2>&1 ||
        fail "ceph-mon --mkfs failed" "$dir/mkfs.log" "$dir/mon.a.log"
    ceph-mon -c "$conf" -i a >>"$dir/mkfs.log" 2>&1 || fail "ceph-mon did not start" "$dir/mon.a.log"

    # `ceph osd new` fails while the monitor settles (elections, the first maps): retry it.
    uuid=$(cat /proc/sys/kernel/random/uuid)
    for attempt in $(seq 1 40); do
        osd_id=$(cluster osd new "$uuid" 2>>"$dir/ceph-cli.log") && break
        osd_id=""
        alive mon.a || fail "the monitor died" "$dir/mon.a.log"
        sleep 0.25
    done
    [ "$osd_id" = 0 ] || fail "ceph osd new did not give osd.0 (got '${osd_id}')" "$dir/ceph-cli.log" "$dir/mon.a.log"
    ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >>"$dir/mkfs.log" 2>&1 ||
        fail "ceph-osd --mkfs failed" "$dir/mkfs.log" "$dir/osd.0.log"
    ceph-osd -c "$conf" -i 0 >>"$dir/mkfs.log" 2>&1 || fail "ceph-osd did not start" "$dir/osd.0.log"

    # The gateway creates its pools and waits for them; the user is made as it starts.
    mkdir -p "$dir/rgw.a"
    radosgw -c "$conf" -n client.rgw.a >>"$dir/mkfs.log" 2>&1 || fail "radosgw did not start" "$dir/client.rgw.a.log"
    access=$(tr -dc 'A-Z0-9' </dev/urandom | head -c 20 || true)
    secret=$(tr -dc 'A-Za-z0-9' </dev/urandom | head -c 40 || true)
    for attempt in $(seq 1 120); do
        radosgw-admin -c "$conf" -n client.admin user create --uid chpox --display-name "chpox tests" \
            --access-key "$access" --secret-key "$secret" >"$dir/user.json" 2>>"$dir/radosgw-admin.log" && break
        alive osd.0 || fail "the OSD died" "$dir/osd.0.log"
        alive client.rgw.a || fail "radosgw died" "$dir/client.rgw.a.log"
        sleep 0.25
    done
    grep -q "$access" "$dir/user.json" || fail "radosgw-admin could not make the S3 user" "$dir/radosgw-admin.log"
    cat >"$env_file" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret
AWS_REGION=us-east-1
EOF
    chmod 600 "$env_file"
    wait_for_rgw 0.25 "radosgw died" "radosgw does not answer on 127.0.0.1:$rgw_port"
    local elapsed_ms=$(((${EPOCHREALTIME/./} - ${began/./}) / 1000))
    echo "ceph.sh: started in $dir in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s;" \
        "S3 at http://127.0.0.1:$rgw_port (keys in $env_file)"
}

# Waits (240 tries, PAUSE seconds apart) until the gateway answers; fails with DIED when it
# ends meanwhile, with SILENT when it never answers.
wait_for_rgw() {
    local pause=$1 died=$2 silent=$3 attempt
    for attempt in $(seq 1 240); do
        rgw_answers && return 0
        alive client.rgw.a || fail "$died" "$dir/client.rgw.a.log"
        sleep "$pause"
    done
    rgw_answers || fail "$silent" "$dir/client.rgw.a.log"
}

# The gateway alone, killed and started again; returns once it answers. The S3 user and every
# object live in the OSD, which goes on running.
restart_rgw() {
    running || fail "no working cluster in $dir to restart the gateway of (scripts/ceph.sh start)"
    local pid attempt began
    began=$EPOCHREALTIME
    pid=$(pid_of client.rgw.a)
    # SIGTERM: the gateway unregisters its watches on the cluster's notify objects as it goes.
    # Killed outright, they linger until the OSD times them out (30 s), and each bucket made
    # meanwhile waits 20 s for the dead gateway's answer.
    kill -TERM "$pid" 2>/dev/null || true
    for attempt in $(seq 1 500); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null || true # one that would not stop in 10 s
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    radosgw -c "$conf" -n client.rgw.a >>"$dir/mkfs.log" 2>&1 || fail "radosgw did not start again" "$dir/client.rgw.a.log"
    wait_for_rgw 0.05 "radosgw died as it started again" "radosgw does not answer after its restart"
    local elapsed_ms=$(((${EPOCHREALTIME/./} - ${began/./}) / 1000))
    echo "ceph.sh: the gateway restarted in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s"
}

status() {
    if running; then
        echo "ceph.sh: running in $dir ($(grep AWS_ENDPOINT_URL "$env_file"))"
    else
        local daemon
        for daemon in "${daemons[@]}"; do
            alive "$daemon" || echo "ceph.sh: $daemon is not running"
        done
        echo "ceph.sh: no working cluster in $dir (scripts/ceph.sh start)"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    restart-rgw) restart_rgw ;;
    *)
        echo "usage: scripts/ceph.sh start|stop|status|restart-rgw" >&2
        exit 2
        ;;
esac
