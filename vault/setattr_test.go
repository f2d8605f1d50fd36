package vault

import (
	"os"
	"testing"
)

// Attribute changes to a file open for writing wait for its commit: this
// process sees them at once, another at close, and a write after an
// explicit mtime sets mtime again.
func TestSetAttrOnFileOpenForWriting(t *testing.T) {
	v := openTest(t, nil)
	other := reopenSecond(t, v)
	f, err := v.OpenFile("f", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	mode, uid := uint32(0o600), uint32(42)
	mtime := int64(1_000_000_000_000_000_000)
	in, err := v.SetAttr(f.Ino(), SetAttr{Mode: &mode, UID: &uid, Mtime: &mtime})
	if err != nil {
		t.Fatal(err)
	}
	if in.Mode != 0o600 || in.UID != 42 || in.Mtime != mtime || in.Size != 4 {
		t.Fatalf("SetAttr returned %+v", in)
	}
	if st, err := other.Stat("f"); err != nil || st.Mode != 0o644 {
		t.Fatalf("another handle before close: %+v, %v", st, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := other.Stat("f")
	if err != nil || st.Mode != 0o600 || st.UID != 42 || st.Mtime != mtime || st.Size != 4 {
		t.Fatalf("another handle after close: %+v, %v", st, err)
	}

	// A write after an explicit mtime wins.
	f, err = v.OpenFile("f", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.SetAttr(f.Ino(), SetAttr{Mtime: &mtime}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("more"), 4); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := other.Stat("f"); err != nil || st.Mtime == mtime || st.Size != 8 {
		t.Fatalf("after a later write: %+v, %v", st, err)
	}

	// DropPrivileges clears setuid, and setgid only with group execute.
	suid := uint32(0o6755)
	if _, err := v.SetAttr(f.Ino(), SetAttr{Mode: &suid}); err != nil {
		t.Fatal(err)
	}
	in, err = v.SetAttr(f.Ino(), SetAttr{DropPrivileges: true})
	if err != nil || in.Mode != 0o755 {
		t.Fatalf("drop privileges: %o, %v", in.Mode, err)
	}
}

// reopenSecond opens another handle on v's file, as another process would.
func reopenSecond(t *testing.T, v *Vault) *Vault {
	t.Helper()
	o, err := Open(v.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// A file just created answers SetAttr from the inode its creation stored,
// without a query, until any other write of this process: a hard link
// made meanwhile shows in the next answer.
func TestSetAttrOnCreatedFile(t *testing.T) {
	v := openTest(t, nil)
	f, in, err := v.CreateFile(RootIno, "new", 0o644, 7, 8, os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("12345"), 0); err != nil {
		t.Fatal(err)
	}
	mtime := int64(1_500_000_000_000_000_000)
	got, err := v.SetAttr(in.ID, SetAttr{Mtime: &mtime})
	if err != nil {
		t.Fatal(err)
	}
	if got.Mtime != mtime || got.Size != 5 || got.Mode != 0o644 || got.UID != 7 || got.GID != 8 || got.Nlink != 1 || got.Kind != KindFile {
		t.Fatalf("SetAttr after create: %+v", got)
	}
	mode := uint32(0o600)
	if got, err = v.SetAttr(in.ID, SetAttr{Mode: &mode}); err != nil || got.Mode != 0o600 || got.Mtime != mtime {
		t.Fatalf("second SetAttr: %+v, %v", got, err)
	}
	if _, err := v.Link(in.ID, RootIno, "second-name"); err != nil {
		t.Fatal(err)
	}
	uid := uint32(9)
	got, err = v.SetAttr(in.ID, SetAttr{UID: &uid})
	if err != nil {
		t.Fatal(err)
	}
	if got.Nlink != 2 || got.UID != 9 || got.Mode != 0o600 || got.Mtime != mtime || got.Size != 5 {
		t.Fatalf("SetAttr after a link: %+v", got)
	}
}
