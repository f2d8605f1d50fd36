#!/usr/bin/env bash
# bench-fsmix.sh: the mixed metadata and data workload of scripts/fsmix
# (fsstress's operation mix) on ext4 (a directory of WORK's file system),
# on a bare go-fuse loopback of it (scripts/loopback) and on a kvaultfs
# mount of a fresh vault, one after another, with the same seed; prints
# each one's time and the kvaultfs daemon's memory (peak, at the end and
# after the tree is deleted).
#
# Environment: PROCS (8), OPS per worker (20000), SEED (1), WORK (a new
# temporary directory), KVAULTFS (a kvaultfs binary to use instead of
# building one), PROFILE (a file: the kvaultfs daemon's CPU profile).
# Needs root (FUSE mounts, mknod).
set -euo pipefail
PROCS=${PROCS:-8}
OPS=${OPS:-20000}
SEED=${SEED:-1}
WORK=${WORK:-$(mktemp -d /tmp/bench-fsmix.XXXXXX)}
cd "$(dirname "$0")/.."
mkdir -p "$WORK/bin" "$WORK/ext4" "$WORK/loop-back" "$WORK/loop" "$WORK/kv"
go build -o "$WORK/bin/fsmix" ./scripts/fsmix
go build -o "$WORK/bin/loopback" ./scripts/loopback
KV=${KVAULTFS:-$WORK/bin/kvaultfs}
[[ -n "${KVAULTFS:-}" ]] || go build -o "$KV" ./cmd/kvaultfs

cleanup() {
	for m in "$WORK/loop" "$WORK/kv"; do
		mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }
	done
	return 0
}
trap cleanup EXIT

waitmount() {
	for _ in $(seq 100); do mountpoint -q "$1" && return 0; sleep 0.1; done
	echo "no mount at $1" >&2
	exit 1
}

run() { nice "$WORK/bin/fsmix" -p "$PROCS" -n "$OPS" -s "$SEED" "$1/run"; }

echo "## ext4"
run "$WORK/ext4"
rm -rf "$WORK/ext4/run"

echo "## loopback"
"$WORK/bin/loopback" "$WORK/loop-back" "$WORK/loop" >"$WORK/loop.log" 2>&1 &
waitmount "$WORK/loop"
run "$WORK/loop"
rm -rf "$WORK/loop/run"
umount "$WORK/loop"

echo "## kvaultfs"
"$KV" mount ${PROFILE:+--cpu-profile "$PROFILE"} "$WORK/kv.db" "$WORK/kv" >"$WORK/kv.log" 2>&1 &
pid=$!
waitmount "$WORK/kv"
run "$WORK/kv"
mem() { grep -E "$1" "/proc/$pid/status" | tr -s ' \t\n' ' '; echo; }
echo -n "daemon memory: "; mem "VmHWM|VmRSS|RssAnon"
rm -rf "$WORK/kv/run"
sleep 3
echo -n "after deleting the tree: "; mem "VmRSS|RssAnon"
umount "$WORK/kv"
wait "$pid"
echo "database: $(stat -c %s "$WORK/kv.db") bytes"
