#!/usr/bin/env bash
# Long concurrency stress of the library and the mount: the stress tests
# of vault/stress_test.go and mount_test/stress_test.go (which CI runs for
# a few seconds each) run for DURATION each, under their watchdog, which
# dumps every goroutine (and the daemons' and helpers' stacks) and fails
# when one operation makes no progress for STALL.
#
#   scripts/stress.sh [TEST_REGEXP]     (default: ^TestStress)
#
# Environment:
#   DURATION=5m    how long each stress test keeps its workers busy (s, m or h)
#   STALL=30s      how long one operation may take before the watchdog fires
#   SEED=N         repeat a run (every test logs the seed it used)
#   ROUNDS=1       run the whole set this many times
#   RACE=0         1: the vault's tests under the race detector
#   LOG=/tmp/kvaultfs-stress.log   the full go test -v output
#
# Needs root (or fusermount3) and /dev/fuse for the mount tests. Each
# test logs how many operations it completed; the watchdog's full dump
# goes to /tmp/kvault*-watchdog-*.txt, whose path the failure names.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5m}
STALL=${STALL:-30s}
ROUNDS=${ROUNDS:-1}
LOG=${LOG:-/tmp/kvaultfs-stress.log}
RUN=${1:-^TestStress}
export KVAULTFS_STRESS_DURATION=$DURATION KVAULTFS_STRESS_STALL=$STALL
if [ -n "${SEED:-}" ]; then
	export KVAULTFS_STRESS_SEED=$SEED
fi
race=()
if [ "${RACE:-0}" = 1 ]; then
	race=(-race)
fi

# seconds converts 90s, 5m or 2h to seconds.
seconds() {
	local v=$1
	case $v in
	*h) echo $((${v%h} * 3600)) ;;
	*m) echo $((${v%m} * 60)) ;;
	*s) echo "${v%s}" ;;
	*) echo "$v" ;;
	esac
}
# Every test may take DURATION, a stall and its final checks.
tests=$(grep -ho '^func TestStress[A-Za-z]*' vault/stress_test.go mount_test/stress_test.go | wc -l)
timeout=$(( ($(seconds "$DURATION") + $(seconds "$STALL") + 180) * tests ))s

: >"$LOG"
status=0
for round in $(seq 1 "$ROUNDS"); do
	echo "==> round $round of $ROUNDS: $RUN, $DURATION each, stall limit $STALL (log: $LOG)"
	for pkg in ./vault/ ./mount_test/; do
		flags=("${race[@]}")
		[ "$pkg" = ./mount_test/ ] && flags=()
		set +e
		nice go test "${flags[@]}" -count=1 -v -timeout "$timeout" -run "$RUN" "$pkg" 2>&1 | tee -a "$LOG" |
			grep -E '^(--- |ok|FAIL)|operations in|watchdog:|full dump'
		rc=${PIPESTATUS[0]}
		set -e
		if [ "$rc" != 0 ]; then
			status=1
		fi
	done
done
if [ $status != 0 ]; then
	echo "==> FAILED; see $LOG"
fi
exit $status
