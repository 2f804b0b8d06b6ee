package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/restores"
)

// commitOverHTTP runs a whole backup as agent name does: the queued backup
// id (or, for "", an ad-hoc one of /srv), its blobs, a progress report
// without broken_links (as agents before it sent) and the commit.
func (f *backupFixture) commitOverHTTP(name, id string) string {
	f.t.Helper()
	body := map[string]any{"paths": []string{"/srv"}}
	if id != "" {
		body = map[string]any{"backup_id": id}
	}
	r := f.do("POST", "/api/v1/agent/backups", name, body).Want(201)
	var start protocol.StartBackupResponse
	if err := json.Unmarshal(r.Body, &start); err != nil {
		f.t.Fatal(err)
	}
	id = start.Backup.ID
	root, blobs := bkTree(f.t, &start)
	f.upload(name, id, bkFrames(f.t, blobs...)).Want(200)
	stats := map[string]any{}
	for _, k := range []string{"files", "dirs", "symlinks", "others", "files_new", "files_changed", "files_unchanged",
		"excluded", "errors", "logical_bytes", "read_bytes", "added_bytes", "added_raw_bytes", "uploaded_bytes",
		"data_blobs", "tree_blobs", "total_files", "total_bytes"} {
		stats[k] = 0
	}
	f.do("POST", "/api/v1/agent/backups/"+id+"/progress", name, map[string]any{"stats": stats}).Want(200)
	for k, v := range map[string]any{"files": 2, "dirs": 2, "symlinks": 3, "broken_links": 1, "excluded": 4,
		"logical_bytes": 1000, "added_bytes": 300, "added_raw_bytes": 700} {
		stats[k] = v
	}
	f.do("POST", "/api/v1/agent/backups/"+id+"/commit", name, map[string]any{"root_tree": root.String(), "stats": stats,
		"errors": []any{}, "started_at": time.Now().UTC().Format(time.RFC3339Nano)}).Want(200)
	return id
}

func TestBackupMetadataAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBackupFixture(t, db, backups.Options{})
		ctx := context.Background()
		clientID := f.enrollBackupAgent("web")
		adhoc := f.commitOverHTTP("web", "")

		r := f.do("GET", "/api/v1/backups/"+adhoc, "viewer", nil).Want(200)
		b := r.JSON["backup"].(map[string]any)
		want := map[string]any{"host_name": "web.example", "backup_name": "", "level": float64(0), "session": adhoc,
			"mode": "fs", "compression_alg": "zstd", "compression": "fastest", "encrypted": true, "client_os": "linux",
			"agent_version": "test", "expires_at": nil,
			"counts": map[string]any{"files": float64(2), "dirs": float64(2), "symlinks": float64(3), "broken_links": float64(1),
				"excluded": float64(4), "errors": float64(0)},
			"sizes": map[string]any{"logical": float64(1000), "stored_compressed": float64(300), "newly_added": float64(700)}}
		for k, v := range want {
			if got, ok := b[k]; !ok || !jsonEqual(got, v) {
				t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
			}
		}
		if ts, _ := b["timestamp"].(string); ts == "" || ts != b["started_at"] {
			t.Errorf("timestamp = %v, started_at %v", b["timestamp"], b["started_at"])
		}
		if _, ok := b["errors"].([]any); !ok {
			t.Errorf("the detail lacks the error list: %v", b)
		}

		// A plan's backups carry its name and, with hold_days, expires_at;
		// lists carry the metadata too.
		pl := &coffer.Plan{Name: "web nightly", ClientID: clientID, Include: []string{"/srv"}, Enabled: true,
			Retention: coffer.Retention{KeepLast: 5, HoldDays: 7}}
		if err := db.CreatePlan(ctx, pl); err != nil {
			t.Fatal(err)
		}
		admin, err := db.GetUserByUsername(ctx, "admin")
		if err != nil {
			t.Fatal(err)
		}
		q, err := f.backups.RunPlan(ctx, &coffer.Principal{Kind: coffer.PrincipalSession, UserID: admin.ID, Username: "admin",
			Role: coffer.RoleAdmin, Scopes: coffer.RoleAdmin.Permissions()}, pl)
		if err != nil {
			t.Fatal(err)
		}
		r = f.do("GET", "/api/v1/backups/"+q.ID, "viewer", nil).Want(200)
		if b := r.JSON["backup"].(map[string]any); b["level"] != nil || b["expires_at"] != nil || b["session"] != "" {
			t.Errorf("a queued backup's metadata: %v", b)
		}
		planned := f.commitOverHTTP("web", q.ID)
		r = f.do("GET", "/api/v1/backups?plan_id="+pl.ID, "viewer", nil).Want(200)
		items := r.JSON["items"].([]any)
		if len(items) != 1 {
			t.Fatalf("plan's backups = %s", r.Body)
		}
		item := items[0].(map[string]any)
		finished, _ := time.Parse(time.RFC3339, item["finished_at"].(string))
		expires, _ := time.Parse(time.RFC3339, item["expires_at"].(string))
		if item["id"] != planned || item["backup_name"] != "web nightly" || !expires.Equal(finished.AddDate(0, 0, 7)) ||
			item["client_os"] != "linux" || item["level"] != float64(0) {
			t.Errorf("plan backup in a list = %v", item)
		}
		if _, ok := item["errors"]; ok {
			t.Error("a list item carries the error list")
		}
	})
}

// jsonEqual compares decoded JSON values.
func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestForgetBackupAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newBackupFixture(t, db, backups.Options{})
		ctx := context.Background()
		clientID := f.enrollBackupAgent("web")
		id := f.commitOverHTTP("web", "")
		b, err := db.GetBackup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}

		for _, role := range []string{"viewer", "operator", "web"} {
			f.do("DELETE", "/api/v1/backups/"+id, role, nil).WantError(403, "forbidden")
		}
		f.do("DELETE", "/api/v1/backups/"+strings.Repeat("x", 65), "admin", nil).WantError(400, "invalid_request")
		f.do("DELETE", "/api/v1/backups/01NOSUCH", "admin", nil).WantError(404, "backup_not_found")
		queued := f.do("POST", "/api/v1/clients/"+clientID+"/backups", "operator", map[string]any{"paths": []string{"/etc"}}).
			Want(201).Str("backup", "id")
		r := f.do("DELETE", "/api/v1/backups/"+queued, "admin", nil).WantError(409, "backup_active")
		if !strings.Contains(r.Str("detail"), "cancel it first") {
			t.Errorf("detail = %s", r.Body)
		}

		r = f.do("DELETE", "/api/v1/backups/"+id, "admin", nil).Want(200)
		if r.JSON["success"] != true || r.Str("id") != id {
			t.Fatalf("forget = %s", r.Body)
		}
		if _, err := f.repo.LoadSnapshot(ctx, b.SnapshotID); err == nil {
			t.Fatal("the snapshot outlived the forget")
		}
		f.do("GET", "/api/v1/backups/"+id, "admin", nil).WantError(404, "backup_not_found")
		f.do("DELETE", "/api/v1/backups/"+id, "admin", nil).WantError(404, "backup_not_found")

		evs, err := db.ListEvents(ctx, metadb.EventQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, e := range evs {
			if e.Code == backups.EventForgotten && e.Resource.ID == id {
				found = e.Actor == "admin" && e.ActorID == f.userID("admin")
			}
		}
		if !found {
			t.Fatalf("no backup.forgotten event with the actor among %+v", evs)
		}
	})
}

func TestDeleteRestoreAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newRestoreFixture(t, db, restores.Options{})
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "operator2", "password": "operator2-password",
			"role": "operator"}).Want(201)
		f.tokens["operator2"] = f.login("operator2", "operator2-password")

		id := f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/restore"}).
			Want(201).Str("restore", "id")
		f.do("DELETE", "/api/v1/restores/"+id, "operator", nil).WantError(409, "restore_active")
		f.do("POST", "/api/v1/restores/"+id+"/cancel", "operator", nil).Want(200)

		f.do("DELETE", "/api/v1/restores/"+id, "viewer", nil).WantError(403, "forbidden")
		f.do("DELETE", "/api/v1/restores/"+id, f.alphaKey, nil).WantError(403, "forbidden")
		f.do("DELETE", "/api/v1/restores/"+id, "operator2", nil).WantError(403, "client_not_owned")
		f.do("DELETE", "/api/v1/restores/01NOSUCH", "operator", nil).WantError(404, "restore_not_found")
		f.do("DELETE", "/api/v1/restores/"+strings.Repeat("x", 65), "operator", nil).WantError(400, "invalid_request")
		r := f.do("DELETE", "/api/v1/restores/"+id, "operator", nil).Want(200)
		if r.JSON["success"] != true || r.Str("id") != id {
			t.Fatalf("delete = %s", r.Body)
		}
		f.do("GET", "/api/v1/restores/"+id, "viewer", nil).WantError(404, "restore_not_found")
		f.do("DELETE", "/api/v1/restores/"+id, "operator", nil).WantError(404, "restore_not_found")
		if _, err := db.GetBackup(context.Background(), f.backupID); err != nil {
			t.Fatalf("the backup went with its restore: %v", err)
		}

		// An admin deletes any restore.
		other := f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/r2"}).
			Want(201).Str("restore", "id")
		f.do("POST", "/api/v1/restores/"+other+"/cancel", "operator", nil).Want(200)
		f.do("DELETE", "/api/v1/restores/"+other, "admin", nil).Want(200)
	})
}
