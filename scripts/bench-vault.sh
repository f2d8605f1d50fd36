#!/usr/bin/env bash
# Benchmarks the vault against plain files, in one run, repeated so the
# spread shows, and prints each figure beside its baseline with the ratio.
#
#   scripts/bench-vault.sh [JOB...]
#
# Jobs (default: all): streamput streamget batch16k large1m cache1k cache16k.
#   streamput  a 1 GiB streamed put timed until Close returns (checkpoint
#              included), with WAL and with EnableWAL off, against writing
#              and fsyncing a plain file of the same bytes; peak RssAnon.
#   streamget  that value read back with the page cache dropped (cold) and
#              again (warm), against reading the plain file; peak RssAnon.
#   batch16k   20,000 values of 16 KiB put in one batch (one flush of the
#              write-back cache) and read in random order, against one
#              plain file per value written and read in the same order.
#   large1m    1,000 values of 1 MiB put one by one, then read likewise.
#   cache1k    200,000 puts of 1 KiB with the write-back cache on, with it
#              off (one transaction each, default synchronous mode), and
#              as one plain file each.
#   cache16k   50,000 puts of 16 KiB, likewise.
# Put timings end once the data is durable: the vault with Close (streams)
# or FlushCache + Sync, plain files with fsync (streams) or one syncfs(2)
# of the file system after the last file; the "not synced" rows stop at
# the end of FlushCache and of the last write.
#
# Environment:
#   BENCH_REPS=3          repetitions of every job
#   BENCH_DIR=/tmp        where the temporary work directory is made
#   BENCH_STREAM_MIB=1024 size of the streamed value
#   BENCH_CACHE_CAP_MIB=256 BENCH_CACHE_THRESHOLD_MIB=64
#                         write-back cache of the cache1k/cache16k jobs
#   BENCH_CHUNK_KIB, BENCH_PAGE_KIB
#                         ChunkSize and PageSize of the vaults (default:
#                         DefaultChunkSize, DefaultPageSize)
#   BENCH_OUT             also keep the raw result lines in this file
#
# Cold figures need root (to write /proc/sys/vm/drop_caches); without it
# they are warm and the report says so. Needs only Go and coreutils.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${BENCH_REPS:-3}
jobs=("$@")
if [ ${#jobs[@]} -eq 0 ]; then
	jobs=(streamput streamget batch16k large1m cache1k cache16k)
fi

work=$(mktemp -d "${BENCH_DIR:-/tmp}/bench-vault.XXXXXX")
trap 'rm -rf "$work"' EXIT
results=${BENCH_OUT:-$work/results.txt}
: >"$results"

echo "building benchvault"
go build -o "$work/benchvault" ./scripts/benchvault

flags=(
	-dir "$work"
	-stream-mib "${BENCH_STREAM_MIB:-1024}"
	-cache-cap-mib "${BENCH_CACHE_CAP_MIB:-256}"
	-cache-threshold-mib "${BENCH_CACHE_THRESHOLD_MIB:-64}"
	-chunk-kib "${BENCH_CHUNK_KIB:-0}"
	-page-kib "${BENCH_PAGE_KIB:-0}"
)

variants() {
	case $1 in
	streamput) echo file wal nowal ;;
	streamget) echo file vault ;;
	batch16k | large1m) echo file vault ;;
	cache1k | cache16k) echo file on off ;;
	*)
		echo "unknown job $1" >&2
		exit 2
		;;
	esac
}

# run REP JOB VARIANT: one job in its own process, its figures shown
# indented and kept in the results file.
run() {
	echo "rep $1/$reps: $2 $3"
	"$work/benchvault" "${flags[@]}" -rep "$1" "$2" "$3" >"$work/last.txt"
	cat "$work/last.txt" >>"$results"
	while IFS= read -r line; do
		echo "    $line"
	done <"$work/last.txt"
}

if [ "$(id -u)" -ne 0 ]; then
	echo "note: not root, so the page cache cannot be dropped: cold figures are warm"
fi
echo "work directory $work, $reps repetitions, $(nproc) CPUs"
for ((r = 1; r <= reps; r++)); do
	streamed=no # whether this repetition has written the streamed value
	for job in "${jobs[@]}"; do
		read -r -a vs <<<"$(variants "$job")"
		# Alternate the order between repetitions, so that a drift in
		# the machine's load does not always favour the same side.
		if ((r % 2 == 0)); then
			read -r -a vs <<<"$(printf '%s\n' "${vs[@]}" | tac | tr '\n' ' ')"
		fi
		if [ "$job" = streamget ] && [ $streamed = no ]; then
			run "$r" streamput wal
			run "$r" streamput file
		fi
		for v in "${vs[@]}"; do
			run "$r" "$job" "$v"
		done
		if [ "$job" = streamput ]; then
			streamed=yes
		fi
	done
done

echo
echo "Results ($reps repetitions; ratio = vault / baseline per repetition; higher is better except memory)"
"$work/benchvault" "${flags[@]}" report "$results"
