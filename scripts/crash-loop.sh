#!/usr/bin/env bash
# Long crash loop: mount_test's TestCrashLoop (20 rounds in CI) for
# ROUNDS rounds. Each round mounts the vault, runs writers through the
# mount (dd with fsync, appends, files unlinked while open) and through
# the library (kvaultfs put and rm, separate processes), kills the daemon
# and the writers with SIGKILL at a random moment, removes the stale
# mount, and checks: PRAGMA integrity_check ok, kvaultfs verify clean, no
# unreachable inode, open record or session left, and every write that
# was acknowledged (fsync or close returned) before the kill byte-exact.
# TestKillDaemon (a fixed set of writes, 3 kills) runs after it.
#
#   scripts/crash-loop.sh
#
# Environment:
#   ROUNDS=200     kill rounds
#   SEED=N         repeat a run (the test logs the seed it used)
#   LOG=/tmp/kvaultfs-crash-loop.log   the full go test -v output
#
# Needs root (or fusermount3) and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-200}
LOG=${LOG:-/tmp/kvaultfs-crash-loop.log}
export KVAULTFS_CRASH_ROUNDS=$ROUNDS
if [ -n "${SEED:-}" ]; then
	export KVAULTFS_CRASH_SEED=$SEED
fi
# A round takes about 3 s; allow 30 s each.
timeout=$((ROUNDS * 30 + 600))s
echo "==> $ROUNDS crash rounds (log: $LOG)"
set +e
nice go test -count=1 -v -timeout "$timeout" -run '^(TestCrashLoop|TestKillDaemon)$' ./mount_test/ 2>&1 | tee "$LOG" |
	grep -E '^(--- |ok|FAIL)|crashloop_test|crash_test'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" != 0 ]; then
	echo "==> FAILED; see $LOG"
fi
exit "$rc"
