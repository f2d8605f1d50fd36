#!/usr/bin/env bash
# Benchmarks a large value in a KohakuVault file (format C, served by
# package kohaku through SQLite's incremental blob I/O) against the same
# bytes in a native vault, in one run, repeated and interleaved so the
# spread shows, and prints each figure beside its baseline with the ratio
# kohaku / native.
#
#   scripts/bench-kohaku.sh
#
# Per repetition, the sides alternating which goes first:
#   put big     the large value streamed into a new file with PutReader
#               (vault dict API; vault.Open serves the KohakuVault table),
#               timed from Open to the end of Close; peak RssAnon, VmHWM.
#   get big     it streamed out with GetTo to a sink, cold (page cache
#               dropped) then warm; peak RssAnon, VmHWM.
#   readat      BENCH_READS random 1 MiB reads of it at offsets drawn from
#               the repetition's seed (the same on both sides): cold, then
#               warm after one full read. KohakuVault: kohaku.Table.ReadAt;
#               native: a vault File's ReadAt.
#   put/get small  the same for a value BENCH_SMALL_DIV times smaller, to
#               show whether memory grows with the value's size.
# The KohakuVault file is made as KohakuVault 0.7+ makes it: page size
# 32768, WAL, kohakuvault_meta and the kv table with the spec's CREATE text.
# The native vault has the default options.
#
# Environment:
#   BENCH_REPS=3         repetitions
#   BENCH_DIR=/tmp       where the temporary work directory is made
#   BENCH_MB=900         size of the large value in MB (10^6 bytes), at
#                        most 1000, KohakuVault's limit; 64 for a CI run
#   BENCH_SMALL_DIV=4    the small value is the large one divided by this
#   BENCH_READS=100      random reads per pass
#   BENCH_OUT            also keep the raw result lines in this file
#
# Needs about 2.5 times BENCH_MB of free disk. Cold figures need root (to
# write /proc/sys/vm/drop_caches); without it they are warm and the report
# says so. Needs only Go and coreutils.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${BENCH_REPS:-3}
work=$(mktemp -d "${BENCH_DIR:-/tmp}/bench-kohaku.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=${BENCH_OUT:-$work/results.txt}
: >"$results"

echo "building benchkohaku"
go build -o "$work/benchkohaku" ./scripts/benchkohaku

flags=(
	-dir "$work"
	-mb "${BENCH_MB:-900}"
	-small-div "${BENCH_SMALL_DIV:-4}"
	-reads "${BENCH_READS:-100}"
)
# Check the flags once before anything is written.
"$work/benchkohaku" "${flags[@]}" report /dev/null >/dev/null

# run REP JOB SIDE [SIZE]: one job in its own process, its figures shown
# indented and kept in the results file.
run() {
	local r=$1
	shift
	echo "rep $r/$reps: $*"
	"$work/benchkohaku" "${flags[@]}" -rep "$r" "$@" >"$work/last.txt"
	cat "$work/last.txt" >>"$results"
	while IFS= read -r line; do
		echo "    $line"
	done <"$work/last.txt"
}

if [ "$(id -u)" -ne 0 ]; then
	echo "note: not root, so the page cache cannot be dropped: cold figures are warm"
fi
echo "work directory $work, $reps repetitions, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= reps; r++)); do
	# Alternate the order between repetitions, so that a drift in the
	# machine's load does not always favour the same side.
	sides=(kohaku native)
	if ((r % 2 == 0)); then
		sides=(native kohaku)
	fi
	for job in "put big" "get big" "readat big" "put small" "get small"; do
		for s in "${sides[@]}"; do
			read -r j size <<<"$job"
			run "$r" "$j" "$s" "$size"
		done
	done
	rm -f "$work"/*-small.db* # disk space: every put starts a new file
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Results ($reps repetitions; ratio = kohaku / native per repetition; higher is better except time and memory)"
"$work/benchkohaku" "${flags[@]}" report "$results"
