package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/cofferhq/coffer/internal/server/restores"
)

// restoreFixture is the API fixture with the agents and restores services
// wired in, two enrolled clients, and a finished backup of the first one
// in a real, encrypted repository.
type restoreFixture struct {
	*fixture
	repo     *repository.Repository
	root     blob.ID
	backupID string
	alpha    string // client ids and their credentials
	alphaKey string
	beta     string
	betaKey  string
}

func newRestoreFixture(t testing.TB, db *metadb.DB, ro restores.Options) *restoreFixture {
	t.Helper()
	ctx := context.Background()
	rf := &restoreFixture{repo: repotest.New(t, repotest.Options{Encrypted: true})}
	rf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		ag := agents.New(agents.Options{Store: db, Events: f.hub})
		ro.Store, ro.Repos, ro.Events, ro.Commands, ro.Clients = db, repos.New(rf.repo, nil), f.hub, ag, ag
		o.Agents, o.Restores = ag, restores.New(ro)
	})
	rf.alpha, rf.alphaKey = rf.enrollClient("alpha")
	rf.beta, rf.betaKey = rf.enrollClient("beta")

	_, rf.root = repotest.WriteSnapshot(t, rf.repo, repotest.Files{
		"home/u/big.bin":   repotest.Random(7, 400<<10),
		"home/u/notes.txt": bytes.Repeat([]byte("restore me "), 3000),
		"etc/hostname":     []byte("alpha\n"),
	})
	b := &coffer.Backup{ClientID: rf.alpha, Trigger: coffer.TriggerManual, State: coffer.JobRunning, Paths: []string{"/"}}
	if err := db.CreateBackup(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := db.FinishBackup(ctx, b.ID, metadb.BackupFinish{State: coffer.JobSucceeded, RootTree: rf.root.String(),
		SnapshotID: "snap-1"}); err != nil {
		t.Fatal(err)
	}
	rf.backupID = b.ID
	return rf
}

// enrollClient enrolls a machine with a token the operator creates.
func (f *restoreFixture) enrollClient(name string) (id, credential string) {
	f.t.Helper()
	secret := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"name": name}).Want(201).Str("secret")
	r := f.do("POST", "/api/v1/agent/enroll", "", map[string]any{"token": secret, "hostname": name, "os": "linux",
		"arch": "amd64", "ipv4": []string{}, "ipv6": []string{}, "agent_version": "test"}).Want(201)
	return r.Str("client", "id"), r.Str("credential")
}

// frames decodes a frame stream by blob id.
func (f *restoreFixture) frames(r *apitest.Reply) map[blob.ID]protocol.Frame {
	f.t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != protocol.MediaType {
		f.t.Fatalf("Content-Type = %q, want %s; body %q", ct, protocol.MediaType, r.Body)
	}
	out := map[blob.ID]protocol.Frame{}
	fr := protocol.NewFrameReader(bytes.NewReader(r.Body))
	for {
		fm, err := fr.Read()
		if err == io.EOF {
			return out
		}
		if err != nil {
			f.t.Fatal(err)
		}
		fm.Payload = slices.Clone(fm.Payload)
		out[fm.ID] = fm
	}
}

// snapshotIDs lists the snapshot's blobs: its trees first, then data.
func (f *restoreFixture) snapshotIDs() (trees, data []blob.ID) {
	f.t.Helper()
	trees = []blob.ID{f.root}
	err := f.repo.Walk(context.Background(), f.root, func(_ string, n *tree.Node) error {
		if n.Type == tree.Dir {
			trees = append(trees, n.Subtree)
		}
		data = append(data, n.Content...)
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return trees, data
}

// agentAccept is the Accept header the agent sends for frames.
const agentAccept = protocol.MediaType + ", application/octet-stream, application/json;q=0.5"

func hexList(ids []blob.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

func TestRestoreJobsAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newRestoreFixture(t, db, restores.Options{})
		ctx := context.Background()
		req := map[string]any{"backup_id": f.backupID, "destination": "/srv/restore", "paths": []string{"/home/u"}}
		f.do("POST", "/api/v1/restores", "viewer", req).WantError(403, "forbidden")
		f.do("POST", "/api/v1/restores", f.alphaKey, req).WantError(403, "forbidden")
		f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/r",
			"bogus": 1}).WantError(400, "invalid_request")
		f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "rel"}).
			WantError(400, "invalid_destination")
		f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/r",
			"paths": []string{"../etc"}}).WantError(400, "invalid_path")
		f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": "01NOPE", "destination": "/r"}).
			WantError(404, "backup_not_found")
		f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/r",
			"target_client_id": "01NOPE"}).WantError(404, "client_not_found")

		created := f.do("POST", "/api/v1/restores", "operator", req).Want(201)
		r := created.JSON["restore"].(map[string]any)
		id := r["id"].(string)
		if r["state"] != "queued" || r["source_client_id"] != f.alpha || r["target_client_id"] != f.alpha ||
			r["overwrite"] != "skip" || fmt.Sprint(r["paths"]) != "[home/u]" || r["created_by"] != f.userID("operator") ||
			r["started_at"] != nil || r["error_count"] != float64(0) {
			t.Fatalf("created restore: %s", created.Body)
		}
		cmds, err := db.PendingCommands(ctx, f.alpha, 10)
		if err != nil || len(cmds) != 1 || cmds[0].Kind != protocol.CommandRestore || !strings.Contains(string(cmds[0].Payload), id) {
			t.Fatalf("pending commands = %+v, %v", cmds, err)
		}
		// A second restore, to beta.
		other := f.do("POST", "/api/v1/restores", "operator", map[string]any{"backup_id": f.backupID, "destination": "/x",
			"target_client_id": f.beta, "overwrite": "rename"}).Want(201).Str("restore", "id")

		// Get and list.
		got := f.do("GET", "/api/v1/restores/"+id, "viewer", nil).Want(200)
		if got.Str("restore", "id") != id || got.JSON["restore"].(map[string]any)["errors"] == nil {
			t.Fatalf("get: %s", got.Body)
		}
		f.do("GET", "/api/v1/restores/01NOPE", "viewer", nil).WantError(404, "restore_not_found")
		page := f.do("GET", "/api/v1/restores?page_size=1", "viewer", nil).Want(200)
		items := page.JSON["items"].([]any)
		pg := page.JSON["pagination"].(map[string]any)
		if len(items) != 1 || items[0].(map[string]any)["id"] != other || pg["pagination_mode"] != "cursor" ||
			pg["has_next_page"] != true || pg["total"] != float64(-1) {
			t.Fatalf("first page: %s", page.Body)
		}
		if _, ok := items[0].(map[string]any)["errors"]; ok {
			t.Errorf("list items carry errors: %s", page.Body)
		}
		next := f.do("GET", "/api/v1/restores?page_size=1&cursor="+pg["cursor"].(string), "viewer", nil).Want(200)
		if items := next.JSON["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id ||
			next.JSON["pagination"].(map[string]any)["has_next_page"] != false {
			t.Fatalf("second page: %s", next.Body)
		}
		if n := len(f.do("GET", "/api/v1/restores?client_id="+f.beta, "viewer", nil).Want(200).JSON["items"].([]any)); n != 1 {
			t.Errorf("restores of beta: %d", n)
		}
		if n := len(f.do("GET", "/api/v1/restores?backup_id="+f.backupID+"&state=queued&state=running", "viewer", nil).
			Want(200).JSON["items"].([]any)); n != 2 {
			t.Errorf("queued or running restores of the backup: %d", n)
		}
		f.do("GET", "/api/v1/restores?state=done", "viewer", nil).WantError(400, "invalid_state")
		f.do("GET", "/api/v1/restores?cursor=garbage", "viewer", nil).WantError(400, "invalid_cursor")

		// The agent starts it; users cannot reach agent routes.
		f.do("POST", "/api/v1/agent/restores", "operator", map[string]any{"restore_id": id}).WantError(403, "forbidden")
		f.do("POST", "/api/v1/agent/restores", f.betaKey, map[string]any{"restore_id": id}).WantError(404, "restore_not_found")
		start := f.do("POST", "/api/v1/agent/restores", f.alphaKey, map[string]any{"restore_id": id}).Want(201)
		if start.Str("restore", "root_tree") != f.root.String() || start.Str("restore", "state") != "running" ||
			start.Str("repository", "id") != f.repo.Config().ID {
			t.Fatalf("start: %s", start.Body)
		}
		pr := f.do("POST", "/api/v1/agent/restores/"+id+"/progress", f.alphaKey,
			map[string]any{"stats": coffer.RestoreStats{Files: 2, Bytes: 100}}).Want(200)
		if pr.JSON["cancel"] != false {
			t.Fatalf("progress: %s", pr.Body)
		}

		// Cancel while it runs: the agent hears it, then reports it canceled.
		f.do("POST", "/api/v1/restores/"+id+"/cancel", "viewer", nil).WantError(403, "forbidden")
		c := f.do("POST", "/api/v1/restores/"+id+"/cancel", "operator", nil).Want(200)
		if c.JSON["success"] != true || c.Str("id") != id || !strings.Contains(c.Str("message"), "Cancel requested") {
			t.Fatalf("cancel: %s", c.Body)
		}
		if f.do("POST", "/api/v1/agent/restores/"+id+"/progress", f.alphaKey, map[string]any{"stats": coffer.RestoreStats{Files: 3}}).
			Want(200).JSON["cancel"] != true {
			t.Fatal("progress after cancel does not say cancel")
		}
		f.do("POST", "/api/v1/agent/restores/"+id+"/fail", f.alphaKey, map[string]any{"state": "succeeded", "error": "x"}).
			WantError(400, "invalid_request")
		f.do("POST", "/api/v1/agent/restores/"+id+"/fail", f.alphaKey, map[string]any{"state": "canceled",
			"error": "canceled by the user"}).Want(200)
		done := f.do("GET", "/api/v1/restores/"+id, "viewer", nil).Want(200).JSON["restore"].(map[string]any)
		if done["state"] != "canceled" || done["finished_at"] == nil || done["stats"].(map[string]any)["files"] != float64(3) {
			t.Fatalf("canceled restore: %v", done)
		}
		f.do("POST", "/api/v1/restores/"+id+"/cancel", "operator", nil).WantError(409, "restore_finished")
		// A queued one is canceled at once.
		c = f.do("POST", "/api/v1/restores/"+other+"/cancel", "operator", nil).Want(200)
		if c.Str("message") != "Restore canceled." {
			t.Fatalf("cancel queued: %s", c.Body)
		}
	})
}

func TestRestoreBlobStreamAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newRestoreFixture(t, db, restores.Options{})
		// An ad-hoc restore from the machine itself.
		f.do("POST", "/api/v1/agent/restores", f.betaKey, map[string]any{"backup_id": f.backupID, "destination": "/tmp/r"}).
			WantError(404, "backup_not_found")
		start := f.do("POST", "/api/v1/agent/restores", f.alphaKey, map[string]any{"backup_id": f.backupID,
			"destination": "/tmp/r", "overwrite": "skip"}).Want(201)
		id := start.Str("restore", "id")
		// The agent's codec, from the id key the server hands out.
		var keys blob.Keys
		if key, err := base64.StdEncoding.DecodeString(start.Str("repository", "id_key")); err != nil || len(key) != 32 {
			t.Fatalf("id key: %s", start.Body)
		} else {
			copy(keys.IDKey[:], key)
		}
		codec, err := blob.NewCodec(keys)
		if err != nil {
			t.Fatal(err)
		}
		defer codec.Close()

		trees, data := f.snapshotIDs()
		all := append(slices.Clone(trees), data...)
		loc := f.do("POST", "/api/v1/agent/blobs/locate", f.alphaKey, map[string]any{"restore_id": id, "ids": hexList(all)}).Want(200)
		locs := loc.JSON["locations"].([]any)
		if len(locs) != len(all) {
			t.Fatalf("locate: %s", loc.Body)
		}
		f.do("POST", "/api/v1/agent/blobs/locate", f.betaKey, map[string]any{"restore_id": id, "ids": hexList(all)}).
			WantError(404, "restore_not_found")

		// Read them all: one verified frame per blob, whatever order.
		read := f.do("POST", "/api/v1/agent/blobs/read", f.alphaKey, map[string]any{"restore_id": id, "ids": hexList(all)},
			"Accept", agentAccept).Want(200)
		frames := f.frames(read)
		if len(frames) != len(all) {
			t.Fatalf("%d frames for %d blobs", len(frames), len(all))
		}
		for _, bid := range all {
			fm := frames[bid]
			if fm.Err != "" {
				t.Fatalf("blob %s: %s", bid.Short(), fm.Err)
			}
			if _, err := codec.DecodePayload(nil, fm.Type, bid, fm.Payload, fm.RawLen); err != nil {
				t.Fatalf("blob %s: %v", bid.Short(), err)
			}
		}

		// A missing blob is an error frame.
		missing := blob.ID{9, 9, 9}
		some := []string{data[0].String(), missing.String()}
		frames = f.frames(f.do("POST", "/api/v1/agent/blobs/read", f.alphaKey, map[string]any{"restore_id": id, "ids": some}).Want(200))
		if fm := frames[data[0]]; fm.Err != "" || fm.Type != blob.Data {
			t.Fatalf("frame of %s: %+v", data[0].Short(), fm)
		} else if _, err := codec.DecodePayload(nil, blob.Data, data[0], fm.Payload, fm.RawLen); err != nil {
			t.Fatal(err)
		}
		if fm := frames[missing]; !strings.Contains(fm.Err, "not in the repository") {
			t.Fatalf("missing blob: %+v", fm)
		}
		f.do("POST", "/api/v1/agent/blobs/read", f.betaKey, map[string]any{"restore_id": id, "ids": some},
			"Accept", agentAccept).WantError(404, "restore_not_found")
		f.do("POST", "/api/v1/agent/blobs/read", "operator", map[string]any{"restore_id": id, "ids": some}).
			WantError(403, "forbidden")

		// One tree by id.
		path := "/api/v1/agent/blobs/" + f.root.String() + "?restore_id=" + id
		one := f.frames(f.do("GET", path+"&type=tree", f.alphaKey, nil, "Accept", agentAccept).Want(200))
		if fm := one[f.root]; len(one) != 1 || fm.Type != blob.Tree || fm.Err != "" {
			t.Fatalf("one tree: %+v", one)
		}
		f.do("GET", path+"&type=data", f.alphaKey, nil).WantError(404, "blob_not_found")
		f.do("GET", path+"&type=tree", f.betaKey, nil).WantError(404, "restore_not_found")
		f.do("GET", "/api/v1/agent/blobs/"+f.root.String()+"?type=tree", f.alphaKey, nil).WantError(400, "invalid_request")

		// Finish; then nothing more is served.
		fin := f.do("POST", "/api/v1/agent/restores/"+id+"/finish", f.alphaKey, map[string]any{
			"stats": coffer.RestoreStats{Files: 3}, "errors": []any{}}).Want(200)
		if fin.Str("restore", "state") != "succeeded" || fin.Str("restore", "overwrite") != "skip" {
			t.Fatalf("finish: %s", fin.Body)
		}
		f.do("POST", "/api/v1/agent/blobs/read", f.alphaKey, map[string]any{"restore_id": id, "ids": hexList(all)}).
			WantError(409, "restore_not_running")
		f.do("GET", path+"&type=tree", f.alphaKey, nil).WantError(409, "restore_not_running")
	})
}

func TestRestoreReadLimitAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newRestoreFixture(t, db, restores.Options{MaxReadBytes: 100 << 10})
		id := f.do("POST", "/api/v1/agent/restores", f.alphaKey, map[string]any{"backup_id": f.backupID,
			"destination": "/tmp/r"}).Want(201).Str("restore", "id")
		_, data := f.snapshotIDs()
		r := f.do("POST", "/api/v1/agent/blobs/read", f.alphaKey, map[string]any{"restore_id": id, "ids": hexList(data)}).
			WantError(400, "read_too_large")
		if r.JSON["metadata"].(map[string]any)["max_bytes"] != float64(100<<10) {
			t.Errorf("metadata: %s", r.Body)
		}
		many := make([]string, restores.MaxReadBlobs+1)
		for i := range many {
			many[i] = data[0].String()
		}
		f.do("POST", "/api/v1/agent/blobs/read", f.alphaKey, map[string]any{"restore_id": id, "ids": many}).
			WantError(400, "invalid_request")
	})
}

func TestRestoreRoutesDocumented(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	f := newRestoreFixture(t, db, restores.Options{})
	doc := f.api.OpenAPI()
	for _, route := range []struct{ method, path string }{
		{"POST", "/api/v1/restores"}, {"GET", "/api/v1/restores"}, {"GET", "/api/v1/restores/{id}"},
		{"POST", "/api/v1/restores/{id}/cancel"}, {"POST", "/api/v1/agent/restores"},
		{"POST", "/api/v1/agent/restores/{id}/progress"}, {"POST", "/api/v1/agent/restores/{id}/finish"},
		{"POST", "/api/v1/agent/restores/{id}/fail"}, {"POST", "/api/v1/agent/blobs/locate"},
		{"POST", "/api/v1/agent/blobs/read"}, {"GET", "/api/v1/agent/blobs/{id}"},
	} {
		item := doc.Paths[route.path]
		if item == nil {
			t.Errorf("%s %s is not in the OpenAPI document", route.method, route.path)
			continue
		}
		var found bool
		switch route.method {
		case "GET":
			found = item.Get != nil
		case "POST":
			found = item.Post != nil
		}
		if !found {
			t.Errorf("%s %s is not in the OpenAPI document", route.method, route.path)
		}
		if !slices.Contains(f.api.Patterns(), route.method+" "+route.path) {
			t.Errorf("%s %s is not routed", route.method, route.path)
		}
	}
	for _, p := range []string{"/api/v1/agent/blobs/read", "/api/v1/agent/blobs/{id}"} {
		item := doc.Paths[p]
		op := item.Post
		if op == nil {
			op = item.Get
		}
		mt := op.Responses["200"].Content[protocol.MediaType]
		if mt == nil || mt.Schema == nil || mt.Schema.Format != "binary" || len(op.Responses["200"].Content) != 1 {
			t.Errorf("%s: 200 response is not documented as %s: %+v", p, protocol.MediaType, op.Responses["200"])
		}
		if op.Responses["409"] == nil || op.Responses["404"] == nil {
			t.Errorf("%s: 404/409 not documented", p)
		}
	}
}
