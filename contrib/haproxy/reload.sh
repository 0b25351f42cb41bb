#!/bin/sh
# Reload HAProxy without losing the weights muhurat set at runtime.
#
# Runtime weights live only in the running worker. A reload starts a new
# worker from haproxy.cfg, so without a state file every canary weight goes
# back to its config value (usually 0) and muhurat sees drift and pauses the
# rollout. HAProxy never writes the state file itself: dump
# `show servers state` right before the reload, and the new worker loads it
# (`server-state-file` + `load-server-state-from-file global`).
#
# Caveat: a weight set between the dump and the reload is lost. muhurat
# reads back every endpoint every drift_interval and after every write, so a
# lost raise shows up as drift towards less and pauses; never retry-loop this
# script around a rollout step.
#
# Use it as systemd's reload command:
#   ExecReload=/usr/local/sbin/haproxy-reload.sh
set -eu

CONFIG=${CONFIG:-/etc/haproxy/haproxy.cfg}
SOCKET=${SOCKET:-/run/haproxy/admin.sock}
STATE=${STATE:-/var/lib/haproxy/server-state}
PIDFILE=${PIDFILE:-/run/haproxy.pid}

# 1. Refuse a broken config before touching anything.
haproxy -c -q -f "$CONFIG"

# 2. Dump the live server state atomically (a half-written file would be
#    loaded as-is by the new worker).
tmp="$STATE.tmp.$$"
trap 'rm -f "$tmp"' EXIT
echo "show servers state" | socat -t 5 "UNIX-CONNECT:$SOCKET" - > "$tmp"
# A valid dump starts with the format version line "1".
if [ "$(head -n 1 "$tmp")" != "1" ]; then
    echo "reload.sh: unexpected 'show servers state' output, not reloading:" >&2
    head -n 3 "$tmp" >&2
    exit 1
fi
mv "$tmp" "$STATE"

# 3. Reload: master-worker mode (Debian's unit runs `haproxy -Ws`) reloads
#    on SIGUSR2 to the master; the old worker finishes its sessions.
if [ -n "${MAINPID:-}" ]; then
    kill -USR2 "$MAINPID"
else
    kill -USR2 "$(cat "$PIDFILE")"
fi
