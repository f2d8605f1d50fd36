package mount_test

import (
	"bytes"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
)

// The crash loop (issue 8, item 15), beside TestKillDaemon (which kills
// the daemon under a fixed set of writes, 3 rounds): here writer
// processes through the mount and through the library (kvaultfs put and
// rm, separate processes) run freely, and at a random moment the daemon
// and the writers are killed with SIGKILL, in a random order. Then the
// stale mount is detached and, before the next round mounts again:
// PRAGMA integrity_check is ok, kvaultfs verify is clean, no inode is
// left unreachable once no session is alive, and every file whose write
// was fsynced or closed before the kill is byte-exact. Writers log each
// operation before they start it and again, fsynced, once it returned,
// to a file outside the vault, so the test knows what was durable and
// what was in flight (which may be old, new or partial as the operation
// allows, never damaged beyond it).
//
// KVAULTFS_CRASH_ROUNDS sets the number of rounds (default 20; the
// scripts/crash-loop.sh default is 200).

// crashRounds is how many kill rounds TestCrashLoop runs.
func crashRounds() int {
	if n, err := strconv.Atoi(os.Getenv("KVAULTFS_CRASH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 20
}

// crashSrcSize is the size of the source file that writers copy slices
// of; the log names a slice by offset and length.
const crashSrcSize = 3 << 20

// mountWriterScript writes through the mount: new files (dd conv=fsync),
// appends to one file per writer (dd oflag=append conv=fsync), and files
// unlinked while open (orphans if the daemon dies before they close).
const mountWriterScript = `set -u
n=0
mkdir -p "$MNT/r$R" || exit 1
alog="r$R/w$W-append"
while :; do
	n=$((n+1))
	size=$(( (RANDOM << 15 | RANDOM) % 300000 ))
	skip=$(( (RANDOM << 15 | RANDOM) % (SRCSIZE - 300000) ))
	case $((RANDOM % 5)) in
	0|1)
		key="r$R/w$W-f$n"
		echo "new begin $key $skip $size" >> "$LOG"
		dd if="$SRC" of="$MNT/$key" bs=65536 iflag=skip_bytes,count_bytes skip=$skip count=$size conv=fsync status=none || exit 1
		echo "new done $key $skip $size" >> "$LOG"; sync "$LOG" ;;
	2|3)
		size=$((size % 20000))
		echo "append begin $alog $skip $size" >> "$LOG"
		dd if="$SRC" of="$MNT/$alog" bs=65536 iflag=skip_bytes,count_bytes skip=$skip count=$size oflag=append conv=notrunc,fsync status=none || exit 1
		echo "append done $alog $skip $size" >> "$LOG"; sync "$LOG" ;;
	4)
		key="r$R/w$W-u$n"
		exec 3<>"$MNT/$key" || exit 1
		rm "$MNT/$key" || exit 1
		dd if="$SRC" bs=65536 iflag=skip_bytes,count_bytes skip=$skip count=$size status=none >&3 || exit 1
		exec 3>&- ;;
	esac
done`

// libraryWriterScript writes through the library with the CLI: puts that
// create or replace a few keys, and deletes of them.
const libraryWriterScript = `set -u
while :; do
	key="lib/k$((RANDOM % 8))"
	size=$(( (RANDOM << 15 | RANDOM) % 400000 ))
	skip=$(( (RANDOM << 15 | RANDOM) % (SRCSIZE - 400000) ))
	if [ $((RANDOM % 5)) = 0 ]; then
		echo "rm begin $key 0 0" >> "$LOG"
		if ! out=$("$KV" rm "$DB" "$key" 2>&1); then
			case "$out" in *"not found"*) ;; *) echo "$out" >&2; exit 1 ;; esac
		fi
		echo "rm done $key 0 0" >> "$LOG"; sync "$LOG"
	else
		echo "put begin $key $skip $size" >> "$LOG"
		dd if="$SRC" bs=65536 iflag=skip_bytes,count_bytes skip=$skip count=$size status=none | "$KV" put "$DB" "$key" - || exit 1
		echo "put done $key $skip $size" >> "$LOG"; sync "$LOG"
	fi
done`

// crashState is what the model knows of one key.
type crashState struct {
	data   []byte // durable contents (nil and !exists: absent)
	exists bool
	flight *crashOp // an operation begun but not acknowledged
}

type crashOp struct {
	kind string // new, append, put, rm
	data []byte
}

// crashModel replays the writers' logs.
type crashModel struct {
	src   []byte
	keys  map[string]*crashState
	acked int // operations acknowledged in all rounds
}

func (m *crashModel) state(key string) *crashState {
	s := m.keys[key]
	if s == nil {
		s = &crashState{}
		m.keys[key] = s
	}
	return s
}

// replay applies one log file. A line cut short by the kill is ignored.
func (m *crashModel) replay(t *testing.T, log string) {
	t.Helper()
	raw, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || !strings.HasSuffix(line, f[4]) {
			continue
		}
		skip, err1 := strconv.Atoi(f[3])
		size, err2 := strconv.Atoi(f[4])
		if err1 != nil || err2 != nil || skip+size > len(m.src) {
			continue // the last line, cut short by the kill
		}
		data := m.src[skip : skip+size]
		s := m.state(f[2])
		switch f[1] {
		case "begin":
			s.flight = &crashOp{kind: f[0], data: data}
		case "done":
			m.acked++
			switch f[0] {
			case "new", "put":
				s.data, s.exists = data, true
			case "append":
				s.data, s.exists = append(bytes.Clone(s.data), data...), true
			case "rm":
				s.data, s.exists = nil, false
			}
			s.flight = nil
		}
	}
}

// check compares every key with the model through the library, and
// resolves operations in flight to what the vault holds (if allowed).
func (m *crashModel) check(t *testing.T, v *vault.Vault, round int) (durable, inFlight int) {
	t.Helper()
	for key, s := range m.keys {
		got, err := v.Get(key)
		present := err == nil
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("round %d: get %s: %v", round, key, err)
			continue
		}
		if s.flight == nil {
			durable++
			switch {
			case present != s.exists:
				t.Errorf("round %d: %s exists=%v, want %v (acknowledged before the kill)", round, key, present, s.exists)
			case present && !bytes.Equal(got, s.data):
				t.Errorf("round %d: %s reads %d bytes, want the %d acknowledged before the kill (first difference at %d)", round, key, len(got), len(s.data), firstDiff(got, s.data))
			}
			continue
		}
		inFlight++
		op := s.flight
		ok := false
		switch op.kind {
		case "new": // absent, or at most what was being written
			ok = !present || len(got) <= len(op.data)
		case "append": // the acknowledged part intact, at most the new bytes more
			ok = present && len(got) >= len(s.data) && len(got) <= len(s.data)+len(op.data) && bytes.Equal(got[:len(s.data)], s.data) ||
				!present && !s.exists
		case "put": // a put is atomic: old or new
			ok = present && bytes.Equal(got, op.data) || present == s.exists && (!present || bytes.Equal(got, s.data))
		case "rm": // gone, or still the old value
			ok = !present || s.exists && bytes.Equal(got, s.data)
		}
		if !ok {
			t.Errorf("round %d: %s, %s in flight at the kill: %d bytes (present %v); acknowledged state %d bytes (exists %v), operation %d bytes",
				round, key, op.kind, len(got), present, len(s.data), s.exists, len(op.data))
		}
		s.data, s.exists, s.flight = got, present, nil
	}
	return durable, inFlight
}

// checkNoOrphans checks, with no process using the database, that every
// inode but the reserved ones is reachable and no session or open
// record is left.
func checkNoOrphans(t *testing.T, db string, round int) {
	t.Helper()
	conn, err := sql.Open("sqlite3", "file:"+db+"?mode=ro&_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []struct{ what, sql string }{
		{"unreachable inodes", `SELECT count(*) FROM kvault_inodes WHERE id > 3 AND id NOT IN (SELECT child FROM kvault_dentries)`},
		{"inodes with nlink 0", `SELECT count(*) FROM kvault_inodes WHERE nlink = 0`},
		{"chunks of missing inodes", `SELECT count(*) FROM kvault_chunks WHERE inode NOT IN (SELECT id FROM kvault_inodes)`},
		{"open records", `SELECT count(*) FROM kvault_open`},
		{"sessions", `SELECT count(*) FROM kvault_sessions`},
	} {
		var n int
		if err := conn.QueryRow(q.sql).Scan(&n); err != nil {
			t.Fatalf("round %d: %s: %v", round, q.what, err)
		}
		if n != 0 {
			t.Errorf("round %d: %d %s after every process exited and the vault was opened and closed", round, n, q.what)
		}
	}
}

// startWriter starts a bash writer in its own process group, so that a
// kill reaches its dd and kvaultfs children too.
func startWriter(t *testing.T, script string, env ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	})
	return cmd, &stderr
}

// TestCrashLoop kills the daemon and the writers (mount and library)
// with SIGKILL at random moments, round after round, and checks the
// database and every acknowledged write after each kill.
func TestCrashLoop(t *testing.T) {
	needFUSE(t)
	rounds := crashRounds()
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("KVAULTFS_CRASH_SEED"), 10, 64); err == nil {
		seed = v
	}
	rng := rand.New(rand.NewPCG(seed, 15))
	t.Logf("%d rounds, seed %d (KVAULTFS_CRASH_SEED)", rounds, seed)
	d := newVaultDir(t)
	m := &crashModel{src: genBytes(seed, crashSrcSize), keys: map[string]*crashState{}}
	srcPath := filepath.Join(d.dir, "src.bin")
	writeFile(t, srcPath, m.src, 0o644)
	var durableMax, flightTotal int
	for round := range rounds {
		mnt := mountDaemon(t, d, "--log", filepath.Join(d.dir, "daemon.log"))
		var writers []*exec.Cmd
		var stderrs []*bytes.Buffer
		logs := []string{}
		for w := range 2 {
			log := filepath.Join(d.dir, fmt.Sprintf("r%d-mount%d.log", round, w))
			logs = append(logs, log)
			c, e := startWriter(t, mountWriterScript, "MNT="+d.mnt, "SRC="+srcPath, "LOG="+log,
				"R="+strconv.Itoa(round), "W="+strconv.Itoa(w), "SRCSIZE="+strconv.Itoa(crashSrcSize))
			writers, stderrs = append(writers, c), append(stderrs, e)
		}
		log := filepath.Join(d.dir, fmt.Sprintf("r%d-lib.log", round))
		logs = append(logs, log)
		c, e := startWriter(t, libraryWriterScript, "KV="+kvaultfs, "DB="+d.db, "SRC="+srcPath, "LOG="+log,
			"SRCSIZE="+strconv.Itoa(crashSrcSize))
		writers, stderrs = append(writers, c), append(stderrs, e)

		time.Sleep(time.Duration(300+rng.IntN(2200)) * time.Millisecond)
		killWriters := func() {
			for _, c := range writers {
				syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			}
		}
		order := rng.IntN(3)
		switch order {
		case 0: // the daemon first, writers a moment later
			syscall.Kill(mnt.pid, syscall.SIGKILL)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			killWriters()
		case 1: // writers first
			killWriters()
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			syscall.Kill(mnt.pid, syscall.SIGKILL)
		default:
			syscall.Kill(mnt.pid, syscall.SIGKILL)
			killWriters()
		}
		for i, c := range writers {
			c.Wait()
			// A writer that stopped on its own before the kill failed
			// (the mount's writers fail, rightly, once the daemon is dead).
			if i < 2 && order != 1 {
				continue
			}
			if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && !ws.Signaled() {
				t.Errorf("round %d: writer %d exited by itself (%v): %s", round, i, c.ProcessState, lastBytes(stderrs[i].String(), 2000))
			}
		}
		if !waitGone(mnt.pid, 10*time.Second) {
			t.Fatalf("round %d: the daemon survived SIGKILL", round)
		}
		// A killed process's session counts as alive until its zombie
		// is reaped (by init, for the daemon and the orphaned kvaultfs
		// put): wait for that, so the orphan check below is exact.
		pgids := []int{}
		for _, c := range writers {
			pgids = append(pgids, c.Process.Pid)
		}
		if left := waitReaped(mnt.pid, pgids, 20*time.Second); len(left) > 0 {
			t.Fatalf("round %d: processes not reaped 20s after SIGKILL: %v", round, left)
		}
		detach(d.mnt)
		if isMounted(d.mnt) {
			t.Fatalf("round %d: the stale mount could not be removed", round)
		}
		unregister(d.mnt)

		integrityCheck(t, d.db)
		if r := runLimited(2*time.Minute, "verify", d.db); r.err != nil {
			t.Errorf("round %d: kvaultfs verify: %v\n%s%s", round, r.err, r.stdout, r.stderr)
		}
		v, err := vault.Open(d.db, nil) // collects the orphans of the dead sessions
		if err != nil {
			t.Fatalf("round %d: open after the kill: %v", round, err)
		}
		for _, l := range logs {
			m.replay(t, l)
		}
		durable, inFlight := m.check(t, v, round)
		durableMax, flightTotal = max(durableMax, durable), flightTotal+inFlight
		if err := v.Close(); err != nil {
			t.Errorf("round %d: close: %v", round, err)
		}
		checkNoOrphans(t, d.db, round)
		if t.Failed() {
			t.Fatalf("round %d failed (seed %d); the vault is in %s", round, seed, d.dir)
		}
	}
	t.Logf("%d rounds: %d operations acknowledged; %d keys byte-exact after the last kill; %d operations caught in flight (found old, new or partial as each allows)",
		rounds, m.acked, durableMax, flightTotal)
}

// waitReaped waits until neither pid nor any process of the groups
// pgids is left in /proc, zombies included, and returns those left.
func waitReaped(pid int, pgids []int, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		var left []string
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			p, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
			if err != nil {
				continue
			}
			i := bytes.LastIndexByte(b, ')')
			f := strings.Fields(string(b[i+1:]))
			if len(f) < 3 {
				continue
			}
			pgrp, _ := strconv.Atoi(f[2])
			if p == pid || slices.Contains(pgids, pgrp) {
				left = append(left, fmt.Sprintf("%d %s %s", p, b[:i+1], f[0]))
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}
