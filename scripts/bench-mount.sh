#!/usr/bin/env bash
# bench-mount.sh: the mount benchmark of issue 4, item 6.
#
# Runs the same jobs, in one run, against three targets:
#   ext4  a native directory on the file system of $BENCH_DIR
#   loop  a bare go-fuse loopback of a directory on that file system
#         (scripts/loopback: passthrough off, the same mount settings as
#         kvaultfs), the ceiling for a go-fuse daemon on this machine
#   kv    a kvaultfs mount of a fresh vault on that file system
# and prints each figure (median, min and max over the repetitions) with
# the ratios kv/loop, kv/ext4 and loop/ext4 computed within each
# repetition. Every target is reset (emptied, remounted) before each job,
# so a vault is always fresh, and the order of the targets rotates from
# one repetition to the next.
#
# Needs root (drop_caches, DirectMount), /dev/fuse, fio, perl, and go.
#
# Environment:
#   BENCH_REPS     repetitions (default 3)
#   BENCH_OUT      markdown results (default bench-results/mount.md in the
#                  repository, which is gitignored)
#   BENCH_DIR      where the work directory is made (default $TMPDIR or /tmp)
#   BENCH_JOBS     jobs to run, space separated (default: all of
#                  "seq rand tar tree mem")
#   BENCH_NOWAL    1 (default): also time the sequential write on a vault
#                  created with WAL off (scripts/mkvault -wal=false)
#   BENCH_PROFILE  a directory: every kvaultfs mount writes a CPU profile
#                  there (kv-JOB-rREP-N.prof; go tool pprof -top FILE)
#   BENCH_KEEP     1: keep the work directory
#   BENCH_SEQ_MB, BENCH_RAND_MB, BENCH_RAND_SECS, BENCH_RANDW_IOS,
#   BENCH_TAR_FILES, BENCH_TREE_FILES, BENCH_MEM_MB
#                  override the job sizes below (for quick trials only;
#                  the targets of the issue are defined at the defaults)
set -euo pipefail

# --- Job parameters ---------------------------------------------------------
SEQ_MB=${BENCH_SEQ_MB:-1024}        # sequential write/read: 1 GiB in 1 MiB blocks
RAND_MB=${BENCH_RAND_MB:-256}       # random I/O: on a 256 MiB file
RAND_SECS=${BENCH_RAND_SECS:-10}    # 4 KiB random reads: fixed runtime
RANDW_IOS=${BENCH_RANDW_IOS:-8192}  # 4 KiB random writes: fixed count (32 MiB)
TAR_FILES=${BENCH_TAR_FILES:-5000}  # tar extract: 5,000 files ...
TAR_FILE_KB=16                      # ... of 16 KiB, in 10 directories
TREE_FILES=${BENCH_TREE_FILES:-10000} # ls -lR and rename: one directory of 10,000 empty files
MEM_MB=${BENCH_MEM_MB:-2048}        # memory: cp 2 GiB in, then out
REPS=${BENCH_REPS:-3}
JOBS=${BENCH_JOBS:-seq rand tar tree mem}
NOWAL=${BENCH_NOWAL:-1}
OUT=${BENCH_OUT:-}
PROFILE=${BENCH_PROFILE:-}

# Targets of the issue: ratios are kv/loop relative speed.
T_SEQWRITE=0.6 T_SEQREAD_COLD=0.8 T_RANDREAD=0.5 T_TAR=0.8 T_LSR=0.8
T_RENAME_MS=10 T_RSSANON_MIB=200

# --- Set-up ---------------------------------------------------------------
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$repo/bench-results/mount.md}
[[ $(id -u) == 0 ]] || { echo "bench-mount.sh: needs root (drop_caches, DirectMount)" >&2; exit 1; }
[[ -c /dev/fuse ]] || { echo "bench-mount.sh: no /dev/fuse" >&2; exit 1; }
for tool in fio perl go mountpoint; do
	command -v "$tool" >/dev/null || { echo "bench-mount.sh: $tool not found" >&2; exit 1; }
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "bench-mount.sh: BENCH_REPS must be a positive integer" >&2; exit 1; }

base=${BENCH_DIR:-${TMPDIR:-/tmp}}
W=$(mktemp -d "$base/kvaultfs-bench.XXXXXX")
BIN=$W/bin
mkdir -p "$BIN" "$W/data" "$W/log" "$W/ext4" "$W/loop-back" "$W/loop" "$W/kv" "$W/kvnowal"
[[ -n $PROFILE ]] && mkdir -p "$PROFILE"
RAW=$W/raw.tsv # rep, metric, target, value
: >"$RAW"

declare -A PID=()  # target -> pid of its daemon while mounted
declare -A MNT=([loop]=$W/loop [kv]=$W/kv [kvnowal]=$W/kvnowal)
declare -A DB=([kv]=$W/kv.db [kvnowal]=$W/kvnowal.db)
prof_n=0
job=setup rep=0

cleanup() {
	local rc=$? t
	set +e
	for t in "${!PID[@]}"; do
		if mountpoint -q "${MNT[$t]}"; then
			umount "${MNT[$t]}" 2>/dev/null || umount -l "${MNT[$t]}"
		fi
		# Our own daemons only, by pid: they exit once unmounted.
		for _ in $(seq 100); do kill -0 "${PID[$t]}" 2>/dev/null || break; sleep 0.1; done
		kill "${PID[$t]}" 2>/dev/null
	done
	wait 2>/dev/null
	if [[ ${BENCH_KEEP:-0} == 1 || $rc != 0 ]]; then
		echo "bench-mount.sh: work directory kept: $W" >&2
	else
		rm -rf "$W"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }

now_ns() { date +%s%N; }

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
}

# root T: the directory in which target T's jobs work.
root() {
	case $1 in
	ext4) echo "$W/ext4" ;;
	*) echo "${MNT[$1]}" ;;
	esac
}

# wait_mounted T: until T's mount point is mounted, or its daemon died.
wait_mounted() {
	local t=$1 i
	for i in $(seq 200); do
		if mountpoint -q "${MNT[$t]}"; then return 0; fi
		if ! kill -0 "${PID[$t]}" 2>/dev/null; then
			cat "$W/log/$t.log" >&2
			echo "bench-mount.sh: $t daemon died before mounting" >&2
			exit 1
		fi
		sleep 0.05
	done
	echo "bench-mount.sh: $t did not mount within 10 s" >&2
	exit 1
}

mount_target() {
	local t=$1
	case $t in
	ext4) return 0 ;;
	loop)
		"$BIN/loopback" "$W/loop-back" "${MNT[loop]}" >>"$W/log/loop.log" 2>&1 &
		;;
	kv | kvnowal)
		local args=(mount)
		if [[ -n $PROFILE ]]; then
			prof_n=$((prof_n + 1))
			args+=(--cpu-profile "$PROFILE/$t-$job-r$rep-$prof_n.prof")
		fi
		# In the foreground (backgrounded here) rather than --daemon, so
		# that its pid is ours to sample and wait for.
		"$BIN/kvaultfs" "${args[@]}" "${DB[$t]}" "${MNT[$t]}" >>"$W/log/$t.log" 2>&1 &
		;;
	esac
	PID[$t]=$!
	wait_mounted "$t"
}

unmount_target() {
	local t=$1 i
	[[ $t == ext4 || -z ${PID[$t]:-} ]] && return 0
	for i in $(seq 50); do
		case $t in
		loop) umount "${MNT[$t]}" 2>/dev/null && break ;;
		*) "$BIN/kvaultfs" unmount "${MNT[$t]}" 2>/dev/null && break ;;
		esac
		sleep 0.2
	done
	if mountpoint -q "${MNT[$t]}"; then
		echo "bench-mount.sh: cannot unmount ${MNT[$t]}" >&2
		exit 1
	fi
	wait "${PID[$t]}" || { cat "$W/log/$t.log" >&2; echo "bench-mount.sh: $t daemon failed" >&2; exit 1; }
	unset "PID[$t]"
}

remount() {
	unmount_target "$1"
	mount_target "$1"
}

# reset T: unmount, throw away everything the target holds (a new,
# empty vault for kvaultfs), mount again.
reset() {
	local t=$1
	unmount_target "$t"
	case $t in
	ext4) find "$W/ext4" -mindepth 1 -delete ;;
	loop) find "$W/loop-back" -mindepth 1 -delete ;;
	kv) rm -f "${DB[kv]}" "${DB[kv]}-wal" "${DB[kv]}-shm" ;;
	kvnowal)
		rm -f "${DB[kvnowal]}" "${DB[kvnowal]}-journal"
		"$BIN/mkvault" -wal=false "${DB[kvnowal]}"
		;;
	esac
	mount_target "$t"
}

# record METRIC TARGET VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$rep" "$1" "$2" "$3" >>"$RAW"; }

# secs START_NS END_NS; mbps BYTES START_NS END_NS; ms START END
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
mbps() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / ((b - a) / 1e9) / 1e6 }'; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e6 }'; }

# warm FILE: read a source file into the page cache.
warm() { cat "$1" >/dev/null; }

# --- Jobs -----------------------------------------------------------------
# Each job_X T runs one repetition of job X on target T.

# seq: 1 GiB written with dd bs=1M conv=fsync (the time includes the
# final fsync, so the figure is durable throughput); then the target is
# remounted (FUSE daemons restart with empty caches) and the page cache
# dropped, and the file is read with dd bs=1M cold, then again warm.
job_seq() {
	local t=$1 r s e
	r=$(root "$t")
	reset "$t"
	dd if="$W/data/src" of=/dev/null bs=1M count="$SEQ_MB" status=none
	s=$(now_ns)
	dd if="$W/data/src" of="$r/seq" bs=1M count="$SEQ_MB" conv=fsync status=none
	e=$(now_ns)
	record seqwrite "$t" "$(mbps $((SEQ_MB << 20)) "$s" "$e")"
	remount "$t"
	drop_caches
	s=$(now_ns)
	dd if="$r/seq" of=/dev/null bs=1M status=none
	e=$(now_ns)
	record seqread_cold "$t" "$(mbps $((SEQ_MB << 20)) "$s" "$e")"
	s=$(now_ns)
	dd if="$r/seq" of=/dev/null bs=1M status=none
	e=$(now_ns)
	record seqread_warm "$t" "$(mbps $((SEQ_MB << 20)) "$s" "$e")"
}

# seq on a vault with WAL off: the write only, to measure what WAL's
# second copy (log, then checkpoint) costs.
job_seq_nowal() {
	local r s e
	r=$(root kvnowal)
	reset kvnowal
	dd if="$W/data/src" of=/dev/null bs=1M count="$SEQ_MB" status=none
	s=$(now_ns)
	dd if="$W/data/src" of="$r/seq" bs=1M count="$SEQ_MB" conv=fsync status=none
	e=$(now_ns)
	record seqwrite_nowal kv "$(mbps $((SEQ_MB << 20)) "$s" "$e")"
	unmount_target kvnowal
}

# rand: a 256 MiB file written (dd, fsync) and left in the page cache;
# fio 4 KiB random reads, direct=1 (O_DIRECT: no page cache of the file
# itself), iodepth 1, psync, for a fixed time; then 8192 fio 4 KiB random
# buffered writes over the same file with end_fsync=1, timed from start
# to the end of the final fsync (IOPS = 8192 / that time, fio's start-up
# included for every target alike).
job_rand() {
	local t=$1 r s e iops
	r=$(root "$t")
	reset "$t"
	dd if="$W/data/src" of="$r/rand" bs=1M count="$RAND_MB" conv=fsync status=none
	fio --name=randread --filename="$r/rand" --rw=randread --bs=4k --direct=1 \
		--iodepth=1 --ioengine=psync --size="${RAND_MB}M" --runtime="$RAND_SECS" \
		--time_based --randrepeat=1 --output-format=json >"$W/log/fio.json"
	iops=$(fio_iops read <"$W/log/fio.json")
	record randread "$t" "$iops"
	s=$(now_ns)
	fio --name=randwrite --filename="$r/rand" --rw=randwrite --bs=4k \
		--iodepth=1 --ioengine=psync --size="${RAND_MB}M" \
		--io_size=$((RANDW_IOS * 4))k --end_fsync=1 --randrepeat=1 \
		--output-format=json >"$W/log/fio.json"
	e=$(now_ns)
	record randwrite "$t" "$(awk -v n="$RANDW_IOS" -v a="$s" -v b="$e" 'BEGIN { printf "%.0f", n / ((b - a) / 1e9) }')"
}

# fio_iops read|write: the IOPS of fio's JSON report on stdin.
fio_iops() {
	perl -0777 -ne 'if (/"'"$1"'"\s*:\s*\{.*?"iops"\s*:\s*([0-9.]+)/s) { printf "%.0f\n", $1 } else { exit 1 }'
}

# tar: extract 5,000 files of 16 KiB (10 directories of 500) from a tar
# in the page cache; no sync afterwards (what a user waits for).
job_tar() {
	local t=$1 r s e
	r=$(root "$t")
	reset "$t"
	warm "$W/data/files.tar"
	mkdir "$r/tar"
	s=$(now_ns)
	tar -xf "$W/data/files.tar" -C "$r/tar"
	e=$(now_ns)
	record tar "$t" "$(secs "$s" "$e")"
}

# tree: one directory of 10,000 empty files is extracted (untimed); the
# FUSE targets are remounted and the page, dentry and inode caches of
# every target dropped; then ls -lR of it is timed (cold), the directory
# is renamed with mv (timed alone, process start-up included), and
# renamed back with rename(2) timed inside perl (the system call only).
job_tree() {
	local t=$1 r s e
	r=$(root "$t")
	reset "$t"
	warm "$W/data/tree.tar"
	mkdir "$r/tree"
	tar -xf "$W/data/tree.tar" -C "$r/tree"
	remount "$t"
	drop_caches
	s=$(now_ns)
	ls -lR "$r/tree" >/dev/null
	e=$(now_ns)
	record lsR "$t" "$(secs "$s" "$e")"
	s=$(now_ns)
	mv "$r/tree/d" "$r/tree/renamed"
	e=$(now_ns)
	record rename_mv "$t" "$(ms "$s" "$e")"
	record rename_syscall "$t" "$(perl -MTime::HiRes=time -e \
		'$t = time; rename($ARGV[0], $ARGV[1]) or die "rename: $!\n"; printf "%.2f\n", (time - $t) * 1e3' \
		"$r/tree/renamed" "$r/tree/d")"
	[[ $(find "$r/tree/d" -type f | wc -l) == "$TREE_FILES" ]] || { echo "bench-mount.sh: $t: files lost in rename" >&2; exit 1; }
}

# mem: a fresh daemon; cp of 2 GiB into the target, then out of it (to
# ext4), timed; the daemon's RssAnon is sampled every 50 ms from
# /proc/PID/status, and its VmHWM (peak resident, including mapped file
# pages) read at the end. Default mount settings.
job_mem() {
	local t=$1 r s e out=$W/mem.out
	r=$(root "$t")
	reset "$t"
	warm "$W/data/src"
	local sampler=
	if [[ $t != ext4 ]]; then
		rm -f "$W/log/peak" "$W/log/peak.stop"
		sample_rss "${PID[$t]}" "$W/log/peak" &
		sampler=$!
	fi
	s=$(now_ns)
	cp "$W/data/src" "$r/big"
	cp "$r/big" "$out"
	e=$(now_ns)
	record mem_copy "$t" "$(secs "$s" "$e")"
	if [[ -n $sampler ]]; then
		touch "$W/log/peak.stop"
		wait "$sampler"
		record mem_rssanon "$t" "$(awk '{ printf "%.1f", $1 / 1024 }' "$W/log/peak")"
		record mem_hwm "$t" "$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${PID[$t]}/status")"
	fi
	cmp "$W/data/src" "$out" || { echo "bench-mount.sh: $t: the copy differs" >&2; exit 1; }
	rm -f "$out"
}

# sample_rss PID FILE: write the peak RssAnon (KiB) of PID to FILE until
# FILE.stop appears or PID exits.
sample_rss() {
	local pid=$1 out=$2 peak=0 k v _
	while [[ ! -e $out.stop && -r /proc/$pid/status ]]; do
		while read -r k v _; do
			if [[ $k == RssAnon: ]]; then
				((v > peak)) && peak=$v && echo "$peak" >"$out"
				break
			fi
		done <"/proc/$pid/status" || true
		sleep 0.05
	done
	echo "$peak" >"$out"
}

# --- Data -----------------------------------------------------------------
fstype() { findmnt -n -o FSTYPE -T "$1" 2>/dev/null || stat -f -c %T "$1"; }
log "work directory $W ($(fstype "$W"))"
log "building kvaultfs, loopback and mkvault"
# The tree that was built (others may commit while the benchmark runs).
rev="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') (plus $(git -C "$repo" status --porcelain 2>/dev/null | wc -l) uncommitted or untracked paths)"
(cd "$repo" && go build -o "$BIN/kvaultfs" ./cmd/kvaultfs &&
	go build -o "$BIN/loopback" ./scripts/loopback &&
	go build -o "$BIN/mkvault" ./scripts/mkvault)

src_mb=$((SEQ_MB > MEM_MB ? SEQ_MB : MEM_MB))
src_mb=$((src_mb > RAND_MB ? src_mb : RAND_MB))
log "making the data: $src_mb MiB of random bytes, the tars"
head -c $((src_mb << 20)) /dev/urandom >"$W/data/src"
(
	mkdir -p "$W/data/files" && cd "$W/data/files"
	per=$((TAR_FILES / 10))
	for i in $(seq 0 9); do
		n=$((i < 9 ? per : TAR_FILES - 9 * per))
		mkdir "d$i"
		head -c $((n * TAR_FILE_KB * 1024)) /dev/urandom | (cd "d$i" && split -b "${TAR_FILE_KB}k" -d -a 5 - f)
	done
	tar -cf ../files.tar .
)
(
	mkdir -p "$W/data/tree/d" && cd "$W/data/tree/d"
	seq -f 'f%05g' 0 $((TREE_FILES - 1)) | xargs touch
	cd .. && tar -cf ../tree.tar .
)
rm -rf "$W/data/files" "$W/data/tree"

targets=(ext4 loop kv)
for t in "${targets[@]}"; do mount_target "$t"; done

# --- Run ------------------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
for rep in $(seq "$REPS"); do
	# Rotate the order of the targets, so that none always goes first.
	k=$(((rep - 1) % 3))
	order=("${targets[@]:k}" "${targets[@]:0:k}")
	for job in $JOBS; do
		for t in "${order[@]}"; do
			log "rep $rep/$REPS  $job  $t"
			"job_$job" "$t"
		done
		if [[ $job == seq && $NOWAL == 1 ]]; then
			log "rep $rep/$REPS  seq  kv (WAL off)"
			job_seq_nowal
		fi
	done
done
t_end=$(date +%s)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
for t in loop kv; do unmount_target "$t"; done

# --- Report ---------------------------------------------------------------
# values METRIC TARGET: one per repetition, sorted.
values() { awk -F'\t' -v m="$1" -v t="$2" '$2 == m && $3 == t { print $4 }' "$RAW" | sort -g; }

# spread: "median (min–max)" of numbers on stdin, or "—".
spread() {
	sort -g | awk '{ v[NR] = $1 }
		END {
			if (NR == 0) { print "—"; exit }
			med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			if (NR == 1) printf "%s\n", fmt(med)
			else printf "%s (%s–%s)\n", fmt(med), fmt(v[1]), fmt(v[NR])
		}
		function fmt(x) {
			if (x >= 100 || x == int(x)) return sprintf("%.0f", x)
			if (x >= 10) return sprintf("%.1f", x)
			if (x >= 0.1) return sprintf("%.2f", x)
			return sprintf("%.2g", x)
		}'
}

# ratios METRIC A B HIGHER_BETTER: per repetition, the relative speed of
# A to B (A/B for rates, B/A for times), one per line.
ratios() {
	awk -F'\t' -v m="$1" -v a="$2" -v b="$3" -v hi="$4" '
		$2 == m { v[$1, $3] = $4; reps[$1] = 1 }
		END {
			for (r in reps) if (((r, a) in v) && ((r, b) in v) && v[r, a] > 0 && v[r, b] > 0)
				printf "%.3f\n", hi ? v[r, a] / v[r, b] : v[r, b] / v[r, a]
		}' "$RAW"
}

# verdict KIND LIMIT NUMBERS...: PASS or MISS on the median, with how
# many repetitions met the target.
verdict() {
	local kind=$1 limit=$2
	shift 2
	printf '%s\n' "$@" | sort -g | awk -v kind="$kind" -v lim="$limit" 'NF {
			v[++n] = $1; ok += (kind == "min") ? ($1 >= lim) : ($1 < lim)
		}
		END {
			if (n == 0) { print "—"; exit }
			med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
			pass = (kind == "min") ? (med >= lim) : (med < lim)
			printf "%s (%d/%d)\n", pass ? "PASS" : "MISS", ok, n
		}'
}

# row METRIC LABEL UNIT HIGHER_BETTER TARGET_TEXT VERDICT: HIGHER_BETTER
# is 1 (a rate), 0 (a time) or - (no ratios: memory).
row() {
	local m=$1 label=$2 unit=$3 hi=$4 target=$5 verdict=$6 t
	local cells=()
	for t in ext4 loop kv; do cells+=("$(values "$m" "$t" | spread)"); done
	local r1=— r2=— r3=—
	if [[ $hi != - ]]; then
		r1=$(ratios "$m" kv loop "$hi" | spread)
		r2=$(ratios "$m" kv ext4 "$hi" | spread)
		r3=$(ratios "$m" loop ext4 "$hi" | spread)
	fi
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"$label" "$unit" "${cells[@]}" "$r1" "$r2" "$r3" "$target" "$verdict"
}

has() { awk -F'\t' -v m="$1" '$2 == m { f = 1 } END { exit !f }' "$RAW"; }

report() {
	echo "## kvaultfs mount benchmark"
	echo
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'), built from $rev, $REPS repetitions," \
		"$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)," \
		"$(go version | awk '{ print $3 }'), work directory on $(df --output=source "$W" | tail -1) ($(fstype "$W"))," \
		"$(((t_end - t_start) / 60)) min, load average $load_start at the start and $load_end at the end."
	echo
	echo "Each cell: median (min–max) over the repetitions. Ratios are relative speed" \
		"(higher is better for kvaultfs; time ratios are inverted), computed within each" \
		"repetition, then summarised the same way. Targets compare the kvaultfs/loopback" \
		"ratio (or an absolute figure); PASS/MISS is judged on the median, (k/n) counts" \
		"the repetitions that met it."
	echo
	echo "| job | unit | ext4 | loopback | kvaultfs | kv/loop | kv/ext4 | loop/ext4 | target | result |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
	if has seqwrite; then
		row seqwrite "seq write ${SEQ_MB} MiB, bs 1M, fsync at end (dd conv=fsync)" "MB/s" 1 "kv/loop ≥ $T_SEQWRITE" \
			"$(verdict min "$T_SEQWRITE" $(ratios seqwrite kv loop 1))"
	fi
	if has seqwrite_nowal; then
		# The same repetition's ext4 and loopback figures, for the ratios.
		awk -F'\t' '$2 == "seqwrite" && $3 != "kv" { OFS = "\t"; $2 = "seqwrite_nowal"; print }' "$RAW" >"$RAW.more"
		cat "$RAW.more" >>"$RAW"
		row seqwrite_nowal "  same, kvaultfs vault with WAL off (mkvault -wal=false)" "MB/s" 1 "(for comparison)" "—"
	fi
	if has seqread_cold; then
		row seqread_cold "seq read ${SEQ_MB} MiB, bs 1M, cold (remount + drop_caches)" "MB/s" 1 "kv/loop ≥ $T_SEQREAD_COLD" \
			"$(verdict min "$T_SEQREAD_COLD" $(ratios seqread_cold kv loop 1))"
		row seqread_warm "seq read ${SEQ_MB} MiB, bs 1M, warm (read again)" "MB/s" 1 "—" "—"
	fi
	if has randread; then
		row randread "4 KiB random read, fio direct=1 iodepth=1, ${RAND_MB} MiB file, ${RAND_SECS} s" "IOPS" 1 "kv/loop ≥ $T_RANDREAD" \
			"$(verdict min "$T_RANDREAD" $(ratios randread kv loop 1))"
		row randwrite "4 KiB random write, fio buffered, $RANDW_IOS writes + end_fsync" "IOPS" 1 "—" "—"
	fi
	if has tar; then
		row tar "tar -x of $TAR_FILES files of $TAR_FILE_KB KiB" "s" 0 "kv/loop ≥ $T_TAR" \
			"$(verdict min "$T_TAR" $(ratios tar kv loop 0))"
	fi
	if has lsR; then
		row lsR "ls -lR of $TREE_FILES files, cold (remount + drop_caches)" "s" 0 "kv/loop ≥ $T_LSR" \
			"$(verdict min "$T_LSR" $(ratios lsR kv loop 0))"
		row rename_mv "mv of a directory of $TREE_FILES files" "ms" 0 "kv < $T_RENAME_MS ms" \
			"$(verdict max "$T_RENAME_MS" $(values rename_mv kv))"
		row rename_syscall "  same, rename(2) alone (timed in perl)" "ms" 0 "kv < $T_RENAME_MS ms" \
			"$(verdict max "$T_RENAME_MS" $(values rename_syscall kv))"
	fi
	if has mem_copy; then
		row mem_copy "cp ${MEM_MB} MiB in, then out (default settings)" "s" 0 "—" "—"
		row mem_rssanon "  daemon peak RssAnon during that copy" "MiB" - "kv < $T_RSSANON_MIB MiB" \
			"$(verdict max "$T_RSSANON_MIB" $(values mem_rssanon kv))"
		row mem_hwm "  daemon VmHWM (peak RSS incl. mapped file pages)" "MiB" - "—" "—"
	fi
	echo
	echo "Parameters: sequential ${SEQ_MB} MiB with dd bs=1M (write: conv=fsync, time includes the fsync);" \
		"random I/O on a ${RAND_MB} MiB file just written (reads: fio psync, direct=1, iodepth 1, ${RAND_SECS} s;" \
		"writes: fio psync, buffered, $RANDW_IOS writes, end_fsync=1, IOPS over the whole run including the fsync);" \
		"tar of $TAR_FILES × $TAR_FILE_KB KiB random files in 10 directories, no sync;" \
		"ls -lR and rename on one directory of $TREE_FILES empty files, after remount and drop_caches;" \
		"memory: cp of ${MEM_MB} MiB in and out with a fresh daemon, RssAnon sampled every 50 ms." \
		"Every target is emptied and remounted before each job; target order rotates per repetition."
	echo
	echo "<details><summary>raw figures (repetition, job, target, value)</summary>"
	echo
	echo "| rep | job | target | value |"
	echo "| --- | --- | --- | --- |"
	awk -F'\t' '$2 != "seqwrite_nowal" || $3 == "kv" { printf "| %s | %s | %s | %s |\n", $1, $2, $3, $4 }' "$RAW"
	echo
	echo "</details>"
}

mkdir -p "$(dirname "$OUT")"
report | tee "$OUT"
log "results written to $OUT"
