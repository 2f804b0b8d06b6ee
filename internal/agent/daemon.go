package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/protocol"
)

// Daemon timing.
const (
	defaultHeartbeat = 15 * time.Second
	// Reconnection backoff of the command stream: full jitter over a
	// bound that doubles from reconnectMin to reconnectMax, and starts
	// over after a connection that lasted stableAfter.
	reconnectMin = time.Second
	reconnectMax = time.Minute
	stableAfter  = time.Minute
	// shutdownWait bounds how long Run waits for canceled jobs to
	// record their end on the server.
	shutdownWait = 45 * time.Second
	// maxListEntries caps a directory listing (protocol maxItems).
	maxListEntries = 100000
	// listDirs bounds the directory listings answered at once.
	listDirs = 4
	// recentCommands is how many command ids are remembered to ignore
	// redeliveries.
	recentCommands = 1000
)

// daemon is the state of one Run.
type daemon struct {
	a    *Agent
	jobs context.Context // parent of the jobs' contexts; canceled at shutdown

	mu       sync.Mutex
	launched map[string]bool // backup and restore ids with a goroutine
	recent   []string        // ids of the last commands, oldest first
	seen     map[string]bool // recent, as a set

	running sync.WaitGroup // job goroutines
	listing sync.WaitGroup // listing goroutines
	lists   chan struct{}  // listing slots
}

// Run is the agent daemon: it sends heartbeats, keeps the command stream
// open (reconnecting with backoff and jitter when it drops) and runs the
// commands it receives — backups and restores in the background, one per
// id; directory listings; cancellations. It returns nil when ctx ends,
// after canceling the running jobs and waiting (a bounded time) for them
// to record their end, and an error when the server refuses the
// credential (the client was deleted: enroll again). While it runs, its
// log is also shipped to the server (the client's logs), the last lines
// when it stops.
func (a *Agent) Run(ctx context.Context) error {
	a.ship.start()
	shipCtx, stopShipping := context.WithCancel(context.WithoutCancel(ctx))
	shipped := make(chan struct{})
	go func() {
		defer close(shipped)
		a.ship.run(shipCtx)
	}()
	defer func() {
		stopShipping()
		<-shipped
		a.ship.stop(ctx)
	}()
	a.log.Info("agent starting", "server", a.state.Server, "name", a.state.Name, "version", a.opts.Version, "state_dir", a.opts.StateDir)
	jobs, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(nil)
	d := &daemon{a: a, jobs: jobs, launched: map[string]bool{}, seen: map[string]bool{}, lists: make(chan struct{}, listDirs)}

	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	var loops sync.WaitGroup
	loops.Go(func() {
		if err := d.heartbeats(runCtx); err != nil {
			stop(err)
		}
	})
	loops.Go(func() {
		if err := d.stream(runCtx); err != nil {
			stop(err)
		}
	})
	loops.Go(func() { d.refreshPlans(runCtx) })
	<-runCtx.Done()
	loops.Wait()
	d.listing.Wait()

	if ids := a.jobs.ids(); len(ids) > 0 {
		a.log.Info("canceling running jobs", "jobs", ids)
	}
	stopJobs(errShutdown)
	done := make(chan struct{})
	go func() {
		d.running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownWait):
		a.log.Warn("jobs did not stop in time; the server will mark them failed", "jobs", a.jobs.ids())
	}
	if err := context.Cause(runCtx); ctx.Err() == nil && err != nil {
		a.log.Error("agent stopping", "err", err)
		return err
	}
	a.log.Info("agent stopped")
	return nil
}

// errRevoked wraps a 401 from the server.
func errRevoked(err error) error {
	return fmt.Errorf("the server refused this agent's credential (the client was deleted, or the state directory belongs to another server): enroll again: %w", err)
}

// heartbeats reports to the server every interval it asks for.
func (d *daemon) heartbeats(ctx context.Context) error {
	a := d.a
	interval := defaultHeartbeat
	failures := 0
	for {
		mi := machineInfo(a.opts.Version)
		allowed := !a.opts.RefuseCommands
		mi.CommandsAllowed = &allowed
		req := protocol.HeartbeatRequest{MachineInfo: mi, RunningJobs: firstN(a.jobs.ids(), 100)}
		hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		resp, err := a.api.Heartbeat(hctx, req)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case apiclient.IsStatus(err, http.StatusUnauthorized):
			return errRevoked(err)
		case err != nil:
			if failures++; failures == 1 || failures%20 == 0 {
				a.log.Warn("heartbeat failed", "failures", failures, "err", err)
			}
		default:
			if failures > 0 {
				a.log.Info("heartbeats reach the server again", "after_failures", failures)
			}
			failures = 0
			if resp.HeartbeatSeconds > 0 {
				interval = time.Duration(resp.HeartbeatSeconds) * time.Second
			}
		}
		if sleepCtx(ctx, interval) != nil {
			return nil
		}
	}
}

// stream keeps the command stream open and dispatches its commands.
func (d *daemon) stream(ctx context.Context) error {
	a := d.a
	bound := reconnectMin
	connected, failures := false, 0
	for {
		began := time.Now()
		s, err := a.api.OpenStream(ctx)
		lost := err == nil
		if lost {
			if connected {
				a.log.Info("command stream reconnected", "server", a.state.Server)
			} else {
				a.log.Info("command stream connected", "server", a.state.Server)
			}
			connected, failures = true, 0
			err = d.commands(ctx, s)
			s.Close()
		} else {
			failures++
		}
		if ctx.Err() != nil {
			return nil
		}
		if apiclient.IsStatus(err, http.StatusUnauthorized) {
			return errRevoked(err)
		}
		if time.Since(began) > stableAfter {
			bound = reconnectMin
		}
		wait := rand.N(bound) + time.Millisecond
		if lost {
			a.log.Warn("command stream lost; reconnecting", "in", wait.Round(time.Millisecond), "err", err)
		} else {
			a.log.Warn("command stream: cannot connect; retrying", "in", wait.Round(time.Millisecond), "failures", failures, "err", err)
		}
		bound = min(2*bound, reconnectMax)
		if sleepCtx(ctx, wait) != nil {
			return nil
		}
	}
}

// commands reads commands from s until it fails.
func (d *daemon) commands(ctx context.Context, s *apiclient.CommandStream) error {
	for {
		cmd, err := s.Next()
		var me *apiclient.MalformedEventError
		if errors.As(err, &me) {
			d.a.log.Warn("ignoring a command", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		d.dispatch(ctx, cmd)
	}
}

// dispatch runs one command (in the background, but for cancel).
func (d *daemon) dispatch(ctx context.Context, cmd protocol.Command) {
	log := d.a.log.With("command_id", cmd.ID, "kind", cmd.Kind)
	if cmd.ID != "" && !d.remember(cmd.ID) {
		log.Debug("ignoring a command delivered again")
		return
	}
	switch {
	case cmd.Kind == protocol.CommandBackup && cmd.Backup != nil && cmd.Backup.BackupID != "":
		id := cmd.Backup.BackupID
		log.Info("command: run backup", "backup_id", id)
		d.launch(id, func(ctx context.Context) {
			d.a.Backup(ctx, BackupRequest{BackupID: id}, nil) // logs its outcome
		})
	case cmd.Kind == protocol.CommandRestore && cmd.Restore != nil && cmd.Restore.RestoreID != "":
		id := cmd.Restore.RestoreID
		log.Info("command: run restore", "restore_id", id)
		d.launch(id, func(ctx context.Context) {
			d.a.Restore(ctx, RestoreRequest{RestoreID: id}, nil)
		})
	case cmd.Kind == protocol.CommandCancel && cmd.Cancel != nil:
		if d.a.jobs.cancel(cmd.Cancel.JobID, errCanceledOnServer) {
			log.Info("command: cancel job", "job_id", cmd.Cancel.JobID)
		} else {
			log.Info("command: cancel a job that is not running here; nothing to do", "job_id", cmd.Cancel.JobID)
		}
	case cmd.Kind == protocol.CommandListDir && cmd.ListDir != nil:
		log.Debug("command: list a directory", "path", cmd.ListDir.Path)
		d.list(ctx, cmd.ID, cmd.ListDir.Path)
	default:
		log.Warn("ignoring a command this agent does not know or that lacks its payload (is the agent older than the server?)")
	}
}

// remember records a command id; false if it was seen recently.
func (d *daemon) remember(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[id] {
		return false
	}
	d.seen[id] = true
	d.recent = append(d.recent, id)
	if len(d.recent) > recentCommands {
		delete(d.seen, d.recent[0])
		d.recent = slices.Delete(d.recent, 0, 1)
	}
	return true
}

// launch runs a job in the background unless one with that id runs.
func (d *daemon) launch(id string, run func(context.Context)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.launched[id] {
		d.a.log.Info("job already running here; ignoring the command", "job_id", id)
		return
	}
	d.launched[id] = true
	d.running.Go(func() {
		defer func() {
			d.mu.Lock()
			delete(d.launched, id)
			d.mu.Unlock()
		}()
		run(d.jobs)
	})
}

// list answers a list_dir command in the background (a few at once).
func (d *daemon) list(ctx context.Context, requestID, path string) {
	select {
	case d.lists <- struct{}{}:
	case <-ctx.Done():
		return
	}
	d.listing.Go(func() {
		defer func() { <-d.lists }()
		res := listDir(path)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := d.a.api.CompleteListDir(cctx, requestID, res); err != nil {
			d.a.log.Warn("could not send a directory listing", "command_id", requestID, "path", path, "err", err)
		}
	})
}

// listDir lists one directory of this machine, without following
// symlinks in it, sorted by name, at most maxListEntries entries.
func listDir(p string) protocol.ListDirResult {
	res := protocol.ListDirResult{Path: truncate(p, 4096), Entries: []protocol.DirEntry{}}
	if !filepath.IsAbs(p) {
		res.Error = fmt.Sprintf("%q is not an absolute path", res.Path)
		return res
	}
	f, err := os.Open(p)
	if err != nil {
		res.Error = truncate(err.Error(), 4096)
		return res
	}
	defer f.Close()
	names, err := f.Readdirnames(maxListEntries)
	if err != nil && err != io.EOF {
		res.Error = truncate(err.Error(), 4096)
		return res
	}
	slices.Sort(names)
	for _, name := range names {
		fi, err := os.Lstat(filepath.Join(p, name))
		if err != nil {
			continue // gone meanwhile
		}
		e := protocol.DirEntry{Name: name, Type: "other", Size: fi.Size(), Mtime: fi.ModTime().UTC()}
		switch m := fi.Mode(); {
		case m.IsRegular():
			e.Type = "file"
		case m.IsDir():
			e.Type, e.Size = "dir", 0
		case m&os.ModeSymlink != 0:
			e.Type = "symlink"
		}
		res.Entries = append(res.Entries, e)
	}
	return res
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
