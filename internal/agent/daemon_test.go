package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/protocol"
)

// waitFor polls cond until it holds; the test's own timeout bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *fakeServer) state(id string) coffer.JobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backups[id].state
}

func startRun(t *testing.T, a *Agent) (context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return cancel, done
}

func TestRun(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	id := s.queue(src)
	cancel, done := startRun(t, a)

	// One connection: a listing, a backup, the backup command again.
	backup := protocol.Command{ID: "c2", Kind: protocol.CommandBackup, Backup: &protocol.BackupCommand{BackupID: id}}
	s.commands <- []protocol.Command{
		{ID: "c1", Kind: protocol.CommandListDir, ListDir: &protocol.ListDirCommand{Path: src}},
		backup, backup,
		{ID: "c9", Kind: "reboot"},
	}
	l := <-s.listings
	var names []string
	for _, e := range l.Entries {
		names = append(names, e.Name+":"+e.Type)
	}
	want := "a.txt:file big.bin:file empty:file emptydir:dir link:symlink spaced name ü.txt:file text:dir"
	if l.Path != src || l.Error != "" || strings.Join(names, " ") != want {
		t.Errorf("listing %s %q: %s", l.Path, l.Error, strings.Join(names, " "))
	}
	waitFor(t, "the backup", func() bool { return s.state(id).Final() })
	if b := s.backup(id); b.state != coffer.JobSucceeded || b.snapshots != 1 {
		t.Errorf("backup %+v", b)
	}

	// The server drops the stream; the agent reconnects and takes the next commands.
	s.commands <- nil
	s.commands <- []protocol.Command{backup, {ID: "c3", Kind: protocol.CommandListDir, ListDir: &protocol.ListDirCommand{Path: "relative/path"}}}
	l = <-s.listings
	if l.Error == "" || len(l.Entries) != 0 {
		t.Errorf("listing of a relative path: %+v", l)
	}
	if n := s.streams.Load(); n < 2 {
		t.Errorf("%d stream connections", n)
	}
	if b := s.backup(id); b.snapshots != 1 {
		t.Errorf("a redelivered command ran the backup again: %d snapshots", b.snapshots)
	}
	hb := <-s.heartbeats
	host, _ := os.Hostname()
	if hb.Hostname != host || hb.RunningJobs == nil {
		t.Errorf("heartbeat %+v", hb)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil // for the cleanup
}

func TestRunCancelAndShutdown(t *testing.T) {
	s := newFakeServer(t)
	a := s.agent(t)
	src := t.TempDir()
	makeTree(t, src)
	arrived := hangUploads(s)
	cancel, done := startRun(t, a)

	// A running backup appears in heartbeats; a cancel command stops it.
	id1 := s.queue(src)
	s.commands <- []protocol.Command{{ID: "c1", Kind: protocol.CommandBackup, Backup: &protocol.BackupCommand{BackupID: id1}}}
	<-arrived
	for hb := range s.heartbeats {
		if slices.Contains(hb.RunningJobs, id1) {
			break
		}
	}
	s.commands <- []protocol.Command{{ID: "c2", Kind: protocol.CommandCancel, Cancel: &protocol.CancelCommand{JobID: id1}}}
	waitFor(t, "the cancellation", func() bool { return s.state(id1).Final() })
	if b := s.backup(id1); b.state != coffer.JobCanceled || b.fail.Error != errCanceledOnServer.Error() {
		t.Errorf("backup %+v", b)
	}

	// Stopping the agent cancels its running jobs, which record it.
	id2 := s.queue(src)
	s.commands <- []protocol.Command{{ID: "c3", Kind: protocol.CommandBackup, Backup: &protocol.BackupCommand{BackupID: id2}}}
	<-arrived
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	done <- nil
	if b := s.backup(id2); b.state != coffer.JobCanceled || b.fail.Error != errShutdown.Error() {
		t.Errorf("backup %+v", b)
	}
}

func TestRunRevoked(t *testing.T) {
	s := newFakeServer(t)
	a, err := New(Options{StateDir: t.TempDir(), State: &State{Server: s.srv.URL, ClientID: "c1", Credential: "cfr_a_deleted"}})
	if err != nil {
		t.Fatal(err)
	}
	err = a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "enroll again") {
		t.Fatalf("Run: %v", err)
	}
}

func TestListDir(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "f"), []byte("12345"), 0o600))
	must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
	must(t, os.Symlink("/nowhere", filepath.Join(dir, "dangling")))
	res := listDir(dir)
	if res.Error != "" || len(res.Entries) != 3 {
		t.Fatalf("%+v", res)
	}
	got := map[string]protocol.DirEntry{}
	for _, e := range res.Entries {
		got[e.Name] = e
	}
	if got["f"].Type != "file" || got["f"].Size != 5 || got["d"].Type != "dir" || got["dangling"].Type != "symlink" || got["f"].Mtime.IsZero() {
		t.Errorf("%+v", res.Entries)
	}
	if res := listDir(filepath.Join(dir, "missing")); res.Error == "" || res.Entries == nil {
		t.Errorf("missing: %+v", res)
	}
	if res := listDir(filepath.Join(dir, "f")); res.Error == "" {
		t.Errorf("a file: %+v", res)
	}
}
