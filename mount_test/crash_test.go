package mount_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/kohakuvault/kvaultfs/vault"
)

// TestKillDaemon kills the daemon with SIGKILL while files are being
// written (some closed, some fsynced and still open, some open in the
// middle of a write, one being written by another process), cleans up
// the stale mount and mounts again, for a few rounds: the database
// passes integrity_check every time, and every file that was closed or
// fsynced before the kill is byte-exact.
func TestKillDaemon(t *testing.T) {
	const rounds = 3
	d := newVaultDir(t)
	durable := map[string][]byte{} // closed or fsynced before a kill
	partial := map[string]int{}    // open mid-write: at most this many bytes

	for round := range rounds {
		m := mountDaemon(t, d)
		checkFiles(t, m, round, durable, partial)
		dir := fmt.Sprintf("round%d", round)
		if err := os.MkdirAll(m.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		seed := uint64(1000 * (round + 1))
		key := func(name string) string { return dir + "/" + name }

		// Closed files, one of them saved the safe way (write, rename).
		for i, size := range []int{0, 1, 4096, 262_145, 3 << 20} {
			k := key(fmt.Sprintf("closed-%d", i))
			durable[k] = genBytes(seed+uint64(i), size)
			writeFile(t, m.path(k), durable[k], 0o644)
		}
		k := key("saved.txt")
		durable[k] = genBytes(seed+10, 70_000)
		writeFile(t, m.path(k+".tmp"), durable[k], 0o644)
		if err := os.Rename(m.path(k+".tmp"), m.path(k)); err != nil {
			t.Fatal(err)
		}
		// A file from an earlier round rewritten in place and closed.
		if round > 0 {
			k := fmt.Sprintf("round%d/closed-4", round-1)
			f, err := os.OpenFile(m.path(k), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			patch := genBytes(seed+11, 500_000)
			if _, err := f.WriteAt(patch, 1_000_000); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			copy(durable[k][1_000_000:], patch)
		}

		var open []*os.File
		// Fsynced files, left open.
		for i, size := range []int{100, 1 << 20, 5<<20 + 7} {
			k := key(fmt.Sprintf("fsynced-%d", i))
			durable[k] = genBytes(seed+20+uint64(i), size)
			f, err := os.Create(m.path(k))
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, f)
			if _, err := f.Write(durable[k]); err != nil {
				t.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				t.Fatalf("fsync %s: %v", k, err)
			}
		}
		// Files open in the middle of a write.
		for i, size := range []int{10_000, 4 << 20} {
			k := key(fmt.Sprintf("open-%d", i))
			partial[k] = size
			f, err := os.Create(m.path(k))
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, f)
			if _, err := f.Write(genBytes(seed+30+uint64(i), size)); err != nil {
				t.Fatal(err)
			}
		}
		// Another process writing when the daemon dies.
		stream := key("stream.bin")
		partial[stream] = -1
		dd := exec.Command("dd", "if=/dev/zero", "of="+m.path(stream), "bs=1M", "count=100000", "status=none")
		if err := dd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)

		if err := syscall.Kill(m.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if !waitGone(m.pid, 10*time.Second) {
			t.Fatalf("the daemon survived SIGKILL")
		}
		ddDone := make(chan error, 1)
		go func() { ddDone <- dd.Wait() }()
		select {
		case err := <-ddDone:
			if err == nil {
				t.Errorf("dd writing into the mount finished without error although the daemon was killed")
			}
		case <-time.After(30 * time.Second):
			dd.Process.Kill()
			t.Fatalf("dd writing into the mount did not fail after the daemon was killed")
		}
		for _, f := range open {
			f.Close() // ENOTCONN: the connection is gone
		}
		var sfs syscall.Statfs_t
		if err := syscall.Statfs(m.mnt, &sfs); !errors.Is(err, syscall.ENOTCONN) {
			t.Errorf("statfs of the dead mount: %v, want ENOTCONN", err)
		}
		// The mount command refuses the stale mount point (as "stale" or,
		// while the kernel still has the root's attributes, as "busy").
		if r := runLimited(30*time.Second, "mount", "--daemon", d.db, d.mnt); r.err == nil || !bytes.Contains([]byte(r.stderr), []byte("stale")) && !bytes.Contains([]byte(r.stderr), []byte("busy")) {
			t.Errorf("mounting over the stale mount: %v %q", r.err, r.stderr)
		}
		if n := len(mountEntries(d.mnt)); n != 1 {
			t.Errorf("%d mounts at %s after mounting over the stale one was refused", n, d.mnt)
		}
		detach(d.mnt)
		if isMounted(d.mnt) {
			t.Fatal("the stale mount could not be removed")
		}
		integrityCheck(t, d.db)
	}

	m := mountDaemon(t, d)
	checkFiles(t, m, rounds, durable, partial)
	m.unmount(t)
	integrityCheck(t, d.db)
	v, err := vault.Open(d.db, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var damage []string
	if _, err := v.Verify(func(dm vault.Damage) { damage = append(damage, fmt.Sprint(dm.Keys, dm.Err)) }); err != nil || len(damage) > 0 {
		t.Fatalf("vault Verify after %d kills: %v %q", rounds, err, damage)
	}
	for k, want := range durable {
		got, err := v.Get(k)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("library Get(%s): %d bytes, %v; want %d", k, len(got), err, len(want))
		}
	}
}

// checkFiles checks through a fresh mount that every durable file is
// byte-exact, and that files that were open mid-write read without an
// error and are no longer than what was written.
func checkFiles(t *testing.T, m *mounted, round int, durable map[string][]byte, partial map[string]int) {
	t.Helper()
	bad := 0
	for k, want := range durable {
		got, err := os.ReadFile(m.path(k))
		if err != nil || !bytes.Equal(got, want) {
			bad++
			t.Errorf("before round %d: %s reads %d bytes (%v), want %d; first difference at %d", round, k, len(got), err, len(want), firstDiff(got, want))
		}
	}
	for k, size := range partial {
		got, err := os.ReadFile(m.path(k))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Errorf("before round %d: %s, open when the daemon was killed, cannot be read: %v", round, k, err)
			continue
		}
		if size >= 0 && len(got) > size {
			t.Errorf("before round %d: %s has %d bytes, more than the %d written", round, k, len(got), size)
		}
	}
	if bad == 0 {
		t.Logf("before round %d: %d durable files byte-exact, %d interrupted files readable", round, len(durable), len(partial))
	}
}
