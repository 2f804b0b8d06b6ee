package backups

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/repos"
)

// quotaLimit admits up to limit bytes a repository, recording each ask.
type quotaLimit struct {
	mu    sync.Mutex
	limit int64
	used  int64
	asked []int64
}

func (q *quotaLimit) Admit(_ context.Context, repositoryID string, add int64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.asked = append(q.asked, add)
	if (add == 0 && q.used >= q.limit) || q.used+add > q.limit {
		return coffer.Errorf(coffer.KindConflict, "quota_exceeded", "repository %s is over its quota of %d bytes", repositoryID, q.limit)
	}
	q.used += add
	return nil
}

func TestQuotaFailsBackups(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		e := newEnv(t, db)
		ctx := context.Background()
		q := &quotaLimit{limit: 0}
		e.svc = New(Options{Store: db, Repos: repos.New(e.repo, nil), Events: e.events, Commands: e.cmds, Clients: db,
			Now: e.clock.Now, Quota: q})

		// A full repository refuses a starting backup, which ends failed.
		_, err := e.svc.StartBackup(ctx, e.client.ID, protocol.StartBackupRequest{Paths: []string{"/srv"}})
		wantCode(t, err, "quota_exceeded")
		list, _ := db.ListBackups(ctx, metadb.BackupFilter{ClientID: e.client.ID})
		if len(list) != 1 || list[0].State != coffer.JobFailed || !strings.Contains(list[0].Error, "over its quota") {
			t.Fatalf("refused backup: %+v", list)
		}
		if e.liveSession() {
			t.Error("the refused backup kept its write session")
		}

		// Room to start, not for the upload: nothing is stored and the backup fails.
		q.limit = 10
		start := e.start(e.client, "/srv")
		codec := agentCodec(t, start.Repository)
		snap := makeSnapshot(t, codec, 1)
		body := frames(t, codec, snap.blobs...)
		_, err = e.upload(e.client, start.Backup.ID, body)
		wantCode(t, err, "quota_exceeded")
		if b := e.backup(start.Backup.ID); b.State != coffer.JobFailed || !strings.Contains(b.Error, "over its quota") {
			t.Errorf("backup after a refused upload: %+v", b)
		}
		if n := e.packs(); n != 0 {
			t.Errorf("%d packs stored past the quota", n)
		}
		if !slices.Contains(e.events.codes(), EventFailed) {
			t.Errorf("events: %v", e.events.codes())
		}

		// With room: the upload is admitted for its payload bytes, once.
		q.limit, q.asked = 1<<30, nil
		start = e.start(e.client, "/srv")
		if _, err := e.upload(e.client, start.Backup.ID, body); err != nil {
			t.Fatal(err)
		}
		if _, err := e.upload(e.client, start.Backup.ID, body); err != nil { // all duplicates now
			t.Fatal(err)
		}
		if len(q.asked) != 2 || q.asked[0] != 0 || q.asked[1] <= 0 || q.asked[1] > int64(len(body)) {
			t.Errorf("quota asked %v for a body of %d bytes", q.asked, len(body))
		}
	})
}
