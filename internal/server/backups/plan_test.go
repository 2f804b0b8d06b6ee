package backups

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// flakyPlans is a Plans that fails while err is set and otherwise asks
// the store.
type flakyPlans struct {
	Plans
	err error
}

func (f *flakyPlans) GetPlan(ctx context.Context, id string) (*coffer.Plan, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.Plans.GetPlan(ctx, id)
}

// TestStartCarriesPlanSettings checks that a plan's backup reaches its
// agent with the plan's commands, command timeout and compression level,
// as the plan says when the agent starts it.
func TestStartCarriesPlanSettings(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		plans := &flakyPlans{Plans: db}
		svc := New(Options{Store: db, Repos: repos.New(e.repo, nil), Events: e.events, Commands: e.cmds, Clients: db,
			Now: e.clock.Now, Plans: plans, CommandTimeout: 90 * time.Second})
		newPlan := func(name, compression string, pre, post []string) *coffer.Plan {
			t.Helper()
			pl := &coffer.Plan{Name: name, ClientID: e.client.ID, Include: []string{"/srv"}, PreCommands: pre,
				PostCommands: post, Compression: compression, Enabled: true}
			if err := db.CreatePlan(ctx, pl); err != nil {
				t.Fatal(err)
			}
			return pl
		}
		start := func(s *Service, pl *coffer.Plan) (*protocol.StartBackupResponse, error) {
			t.Helper()
			b, err := s.RunPlan(ctx, e.admin, pl)
			if err != nil {
				t.Fatal(err)
			}
			return s.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: b.ID})
		}
		// end fails backup id, so that its plan may run again (a plan runs
		// one backup at a time).
		end := func(id string) {
			t.Helper()
			if _, err := db.FinishBackup(ctx, id, metadb.BackupFinish{State: coffer.JobFailed, Error: "test"}); err != nil {
				t.Fatal(err)
			}
		}

		withCmds := newPlan("with commands", "best", []string{"pg_dump db > /srv/db.sql", "sync"}, []string{"rm /srv/db.sql"})
		resp, err := start(svc, withCmds)
		if err != nil {
			t.Fatal(err)
		}
		job := resp.Backup
		if !slices.Equal(job.PreCommands, withCmds.PreCommands) || !slices.Equal(job.PostCommands, withCmds.PostCommands) ||
			job.CommandTimeoutSeconds != 90 || job.PlanID != withCmds.ID || resp.Repository.Compression != "best" {
			t.Fatalf("job %+v, compression %q: want the plan's commands, timeout 90 s and compression best", job, resp.Repository.Compression)
		}
		end(job.ID)

		// The plan as it is when the agent starts the backup, not when it
		// was queued.
		b, err := svc.RunPlan(ctx, e.admin, withCmds)
		if err != nil {
			t.Fatal(err)
		}
		changed := *withCmds
		changed.PreCommands, changed.PostCommands, changed.Compression = []string{"true"}, nil, "off"
		if err := db.UpdatePlan(ctx, &changed); err != nil {
			t.Fatal(err)
		}
		// A failed plan lookup fails the start; the agent's retry gets the
		// backup, now running, with the plan's settings.
		plans.err = errors.New("database unreachable")
		if _, err := svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: b.ID}); err == nil {
			t.Fatal("start succeeded although the plan could not be read")
		}
		plans.err = nil
		resp, err = svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: b.ID})
		if err != nil {
			t.Fatal(err)
		}
		if job := resp.Backup; job.State != coffer.JobRunning || !slices.Equal(job.PreCommands, []string{"true"}) ||
			len(job.PostCommands) != 0 || resp.Repository.Compression != "off" {
			t.Fatalf("after the plan changed: job %+v, compression %q", job, resp.Repository.Compression)
		}
		end(b.ID)

		// The plan's own timeout wins over the server's.
		changed.CommandTimeout = 45 * time.Second
		if err := db.UpdatePlan(ctx, &changed); err != nil {
			t.Fatal(err)
		}
		resp, err = start(svc, &changed)
		if err != nil {
			t.Fatal(err)
		}
		if job := resp.Backup; job.CommandTimeoutSeconds != 45 {
			t.Fatalf("a plan with a 45 s command timeout: job %+v", job)
		}
		end(resp.Backup.ID)

		// No commands: no timeout; no compression: the server's default.
		plain := newPlan("plain", "", nil, nil)
		resp, err = start(svc, plain)
		if err != nil {
			t.Fatal(err)
		}
		if job := resp.Backup; len(job.PreCommands) != 0 || len(job.PostCommands) != 0 || job.CommandTimeoutSeconds != 0 ||
			resp.Repository.Compression != "fastest" {
			t.Fatalf("plain plan: job %+v, compression %q", job, resp.Repository.Compression)
		}

		// A plan deleted, or moved to another client, after its backup was
		// queued: the backup runs as queued, without commands.
		gone := newPlan("gone", "better", []string{"echo pre"}, nil)
		b, err = svc.RunPlan(ctx, e.admin, gone)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeletePlan(ctx, gone.ID); err != nil {
			t.Fatal(err)
		}
		moved := newPlan("moved", "better", []string{"echo pre"}, nil)
		b2, err := svc.RunPlan(ctx, e.admin, moved)
		if err != nil {
			t.Fatal(err)
		}
		moved.ClientID = e.other.ID
		if err := db.UpdatePlan(ctx, moved); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{b.ID, b2.ID} {
			resp, err := svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: id})
			if err != nil {
				t.Fatal(err)
			}
			if job := resp.Backup; len(job.PreCommands) != 0 || job.CommandTimeoutSeconds != 0 || resp.Repository.Compression != "fastest" {
				t.Errorf("backup %s of a deleted or moved plan: job %+v, compression %q", id, job, resp.Repository.Compression)
			}
		}

		// Ad-hoc backups have no plan; a service without plans sends none.
		if resp := e.start(e.client, "/etc"); len(resp.Backup.PreCommands) != 0 || resp.Repository.Compression != "fastest" {
			t.Errorf("ad-hoc backup: %+v", resp)
		}
		resp, err = start(e.svc, withCmds)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Backup.PreCommands) != 0 || resp.Repository.Compression != "fastest" {
			t.Errorf("service without plans: %+v", resp)
		}
	})
}

// TestDefaultCommandTimeout checks the default timeout of ten minutes.
func TestDefaultCommandTimeout(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	e := newEnv(t, db)
	ctx := context.Background()
	svc := New(Options{Store: db, Repos: repos.New(e.repo, nil), Events: e.events, Commands: e.cmds, Clients: db,
		Now: e.clock.Now, Plans: db})
	pl := &coffer.Plan{Name: "p", ClientID: e.client.ID, Include: []string{"/srv"}, PostCommands: []string{"true"}, Enabled: true}
	if err := db.CreatePlan(ctx, pl); err != nil {
		t.Fatal(err)
	}
	b, err := svc.RunPlan(ctx, e.admin, pl)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{BackupID: b.ID})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Backup.CommandTimeoutSeconds != 600 {
		t.Fatalf("command timeout = %d s, want 600", resp.Backup.CommandTimeoutSeconds)
	}
}
