package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blob"
	"github.com/cofferhq/coffer/internal/engine/blobstore/mem"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/engine/tree"
	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/danielgtaylor/huma/v2"
)

// backupFixture is the API fixture with the agents and backups services
// over a repository in memory, indexed in the same store.
type backupFixture struct {
	*fixture
	agents  *agents.Service
	backups *backups.Service
	repo    *repository.Repository
	backend *mem.Backend
}

// newBackupFixture serves the agents and backups services over a memory
// repository; more, if given, wire further services with them.
func newBackupFixture(t testing.TB, db *metadb.DB, opts backups.Options, more ...func(bf *backupFixture, f *fixture, o *Options)) *backupFixture {
	t.Helper()
	bf := &backupFixture{backend: mem.New(mem.Options{Name: t.Name()})}
	repo, _, err := repository.OpenOrInit(context.Background(), bf.backend, func(id string) repository.Index { return db.Index(id) },
		repository.InitOptions{MasterKey: repotest.MasterKey(), Encrypted: true, Chunker: repotest.SmallChunks, PackSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(repo.Close)
	bf.repo = repo
	bf.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		bf.agents = agents.New(agents.Options{Store: db, Events: f.hub})
		opts.Store, opts.Repos, opts.Events, opts.Commands, opts.Clients = db, repos.New(repo, nil), f.hub, bf.agents, bf.agents
		bf.backups = backups.New(opts)
		o.Agents, o.Backups = bf.agents, bf.backups
		for _, wire := range more {
			wire(bf, f, o)
		}
	})
	return bf
}

// enrollBackupAgent enrolls a machine and returns its client id, keeping
// its credential in f.tokens under name.
func (f *backupFixture) enrollBackupAgent(name string) string {
	f.t.Helper()
	secret := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"name": name}).Want(201).Str("secret")
	r := f.do("POST", "/api/v1/agent/enroll", "", map[string]any{"token": secret, "hostname": name + ".example",
		"os": "linux", "arch": "amd64", "ipv4": []string{}, "ipv6": []string{}, "agent_version": "test"}).Want(201)
	f.tokens[name] = r.Str("credential")
	return r.Str("client", "id")
}

// upload posts frames as the agent name.
func (f *backupFixture) upload(name, backupID string, body []byte) *apitest.Reply {
	f.t.Helper()
	return f.do("POST", "/api/v1/agent/blobs?backup_id="+backupID, name, string(body), "Content-Type", protocol.MediaType)
}

// bkBlob is a blob as an agent makes it.
type bkBlob struct {
	t     blob.Type
	id    blob.ID
	plain []byte
}

// bkTree builds / → {docs/ → {a.txt}, b.bin} with the agent's codec and
// returns the root id and every blob, root last.
func bkTree(t testing.TB, start *protocol.StartBackupResponse) (blob.ID, []bkBlob) {
	t.Helper()
	var k blob.Keys
	copy(k.IDKey[:], start.Repository.IDKey)
	codec, err := blob.NewCodec(k)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(codec.Close)
	var blobs []bkBlob
	add := func(typ blob.Type, plain []byte) blob.ID {
		id := codec.IDOf(typ, plain)
		blobs = append(blobs, bkBlob{typ, id, plain})
		return id
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := bytes.Repeat([]byte("text "), 5000)
	b := repotest.Random(1, 100<<10)
	docs, err := (&tree.Tree{Nodes: []tree.Node{{Name: "a.txt", Type: tree.File, Mode: 0o644, ModTime: mtime,
		Size: uint64(len(a)), Content: []blob.ID{add(blob.Data, a)}}}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	docsID := add(blob.Tree, docs)
	root, err := (&tree.Tree{Nodes: []tree.Node{
		{Name: "b.bin", Type: tree.File, Mode: 0o600, ModTime: mtime, Size: uint64(len(b)), Content: []blob.ID{add(blob.Data, b)}},
		{Name: "docs", Type: tree.Dir, Mode: 0o755, ModTime: mtime, Subtree: docsID},
	}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return add(blob.Tree, root), blobs
}

func bkFrames(t testing.TB, blobs ...bkBlob) []byte {
	t.Helper()
	var k blob.Keys
	codec, err := blob.NewCodec(k) // compression needs no key
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	var buf bytes.Buffer
	for _, b := range blobs {
		payload, err := codec.Compress(nil, b.plain, blob.Fastest)
		if err != nil {
			t.Fatal(err)
		}
		if err := protocol.WriteFrame(&buf, b.t, b.id, len(b.plain), payload); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func bkIDs(blobs []bkBlob) []string {
	var out []string
	for _, b := range blobs {
		out = append(out, b.id.String())
	}
	return out
}

func TestBackupOverHTTP(t *testing.T) {
	f := newBackupFixture(t, metadbtest.Open(t, metadb.SQLite), backups.Options{})
	clientID := f.enrollBackupAgent("web")
	f.enrollBackupAgent("db")

	r := f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"paths": []string{"/srv"}, "exclude": []string{"*.tmp"}}).Want(201)
	var start protocol.StartBackupResponse
	if err := json.Unmarshal(r.Body, &start); err != nil {
		t.Fatal(err)
	}
	id := start.Backup.ID
	key := f.repo.Codec().IDKey()
	if start.Backup.State != coffer.JobRunning || !bytes.Equal(start.Repository.IDKey, key[:]) ||
		start.Repository.MaxUploadBytes != 32<<20 || start.Repository.ID != f.repo.Config().ID {
		t.Fatalf("start = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"paths": []string{"srv"}}).WantError(400, "invalid_path")
	f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"paths": []string{"/srv"}, "bogus": 1}).WantError(400, "invalid_request")

	root, blobs := bkTree(t, &start)
	r = f.do("POST", "/api/v1/agent/blobs/check", "web", map[string]any{"backup_id": id, "ids": bkIDs(blobs)}).Want(200)
	if got := r.JSON["missing"].([]any); len(got) != len(blobs) {
		t.Fatalf("missing = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/blobs/check", "web", map[string]any{"backup_id": id, "ids": []string{"nope"}}).
		WantError(400, "invalid_blob_id")
	f.do("POST", "/api/v1/agent/blobs/check", "db", map[string]any{"backup_id": id, "ids": bkIDs(blobs)}).
		WantError(404, "backup_not_found")

	// Binary uploads: the wrong media type, a corrupt frame, then all but one blob.
	body := bkFrames(t, blobs[:len(blobs)-1]...)
	f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "web", string(body)).WantError(415, "unsupported_media_type")
	f.do("POST", "/api/v1/agent/blobs", "web", string(body), "Content-Type", protocol.MediaType).WantError(400, "invalid_request")
	corrupt := bytes.Clone(body)
	corrupt[len(corrupt)-1] ^= 1
	r = f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "web", string(corrupt), "Content-Type", protocol.MediaType).
		WantError(400, "blob_corrupt")
	if r.JSON["metadata"].(map[string]any)["id"] != blobs[len(blobs)-2].id.String() {
		t.Fatalf("corrupt = %s", r.Body)
	}
	if n := len(repotest.Objects(t, f.backend, "packs/")); n != 0 {
		t.Fatalf("%d packs after a refused upload", n)
	}
	f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "db", string(body), "Content-Type", protocol.MediaType).
		WantError(404, "backup_not_found")
	r = f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "web", string(body), "Content-Type", protocol.MediaType).Want(200)
	if r.JSON["stored"] != float64(len(blobs)-1) || r.JSON["duplicates"] != float64(0) || r.JSON["success"] != true {
		t.Fatalf("upload = %s", r.Body)
	}
	r = f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "web", string(body), "Content-Type", protocol.MediaType).Want(200)
	if r.JSON["stored"] != float64(0) || r.JSON["duplicates"] != float64(len(blobs)-1) {
		t.Fatalf("retried upload = %s", r.Body)
	}

	stats := map[string]any{}
	for _, k := range []string{"files", "dirs", "symlinks", "others", "files_new", "files_changed", "files_unchanged",
		"excluded", "errors", "logical_bytes", "read_bytes", "added_bytes", "added_raw_bytes", "uploaded_bytes",
		"data_blobs", "tree_blobs", "total_files", "total_bytes"} {
		stats[k] = 0
	}
	stats["files"] = 2
	r = f.do("POST", "/api/v1/agent/backups/"+id+"/progress", "web", map[string]any{"stats": stats, "current_path": "/srv/x"}).Want(200)
	if r.JSON["cancel"] != false {
		t.Fatalf("progress = %s", r.Body)
	}
	commit := map[string]any{"root_tree": root.String(), "stats": stats, "errors": []any{},
		"started_at": time.Now().UTC().Format(time.RFC3339Nano)}
	r = f.do("POST", "/api/v1/agent/backups/"+id+"/commit", "web", commit).WantError(409, "missing_blobs")
	missing := r.JSON["metadata"].(map[string]any)[protocol.MissingBlobsMetadataKey].([]any)
	if len(missing) != 1 || missing[0] != root.String() {
		t.Fatalf("missing = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/backups/"+id+"/commit", "db", commit).WantError(404, "backup_not_found")
	f.upload("web", id, bkFrames(t, blobs[len(blobs)-1])).Want(200)
	r = f.do("POST", "/api/v1/agent/backups/"+id+"/commit", "web", commit).Want(200)
	if r.Str("backup", "state") != "succeeded" || r.Str("backup", "snapshot_id") == "" || r.Str("backup", "id") != id {
		t.Fatalf("commit = %s", r.Body)
	}
	snapID := r.Str("backup", "snapshot_id")
	if _, err := f.repo.LoadSnapshot(context.Background(), snapID); err != nil {
		t.Fatal(err)
	}
	r = f.do("POST", "/api/v1/agent/backups/"+id+"/commit", "web", commit).Want(200)
	if r.Str("backup", "snapshot_id") != snapID {
		t.Fatalf("commit retry = %s", r.Body)
	}
	r = f.do("POST", "/api/v1/agent/backups/"+id+"/progress", "web", map[string]any{"stats": stats}).Want(200)
	if r.JSON["cancel"] != true {
		t.Fatalf("progress after the end = %s", r.Body)
	}

	// The agent's listings.
	r = f.do("GET", "/api/v1/agent/backups", "web", nil).Want(200)
	items := r.JSON["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] != id || items[0].(map[string]any)["snapshot_id"] != snapID {
		t.Fatalf("agent backups = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/agent/backups", "db", nil).Want(200)
	if len(r.JSON["items"].([]any)) != 0 {
		t.Fatalf("other agent's backups = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/agent/backups/"+id+"/tree?path=/docs", "web", nil).Want(200)
	if r.JSON["total"] != float64(1) || r.JSON["items"].([]any)[0].(map[string]any)["name"] != "a.txt" {
		t.Fatalf("tree = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/agent/backups/"+id+"/tree", "web", nil).Want(200)
	if r.JSON["total"] != float64(2) {
		t.Fatalf("root tree = %s", r.Body)
	}
	f.do("GET", "/api/v1/agent/backups/"+id+"/tree?path=nope", "web", nil).WantError(404, "path_not_found")
	f.do("GET", "/api/v1/agent/backups/"+id+"/tree", "db", nil).WantError(404, "backup_not_found")

	// People see it; agents and people keep to their own routes.
	r = f.do("GET", "/api/v1/backups", "viewer", nil).Want(200)
	items = r.JSON["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("backups = %s", r.Body)
	}
	item := items[0].(map[string]any)
	if _, ok := item["errors"]; ok || item["client_id"] != clientID || item["host_name"] != "web.example" ||
		item["trigger"] != "manual" || item["state"] != "succeeded" || item["root_tree"] != root.String() {
		t.Fatalf("backup in a list = %v", item)
	}
	if _, ok := item["session_id"]; ok {
		t.Fatal("the session id is on the wire")
	}
	r = f.do("GET", "/api/v1/backups/"+id, "viewer", nil).Want(200)
	if errs, ok := r.JSON["backup"].(map[string]any)["errors"].([]any); !ok || len(errs) != 0 {
		t.Fatalf("backup = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/backups/"+id+"/tree?path=docs/a.txt", "viewer", nil).Want(200)
	if r.JSON["total"] != float64(1) {
		t.Fatalf("user tree = %s", r.Body)
	}
	f.do("GET", "/api/v1/backups/nope", "viewer", nil).WantError(404, "backup_not_found")
	f.do("GET", "/api/v1/backups", "web", nil).WantError(403, "forbidden")
	f.do("GET", "/api/v1/agent/backups", "viewer", nil).WantError(403, "forbidden")
	f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "admin", string(body), "Content-Type", protocol.MediaType).
		WantError(403, "forbidden")
}

func TestRunAndCancelOverHTTP(t *testing.T) {
	f := newBackupFixture(t, metadbtest.Open(t, metadb.SQLite), backups.Options{})
	ctx := context.Background()
	clientID := f.enrollBackupAgent("web")

	f.do("POST", "/api/v1/clients/"+clientID+"/backups", "viewer", map[string]any{"paths": []string{"/etc"}}).WantError(403, "forbidden")
	f.do("POST", "/api/v1/clients/nope/backups", "operator", map[string]any{"paths": []string{"/etc"}}).WantError(404, "client_not_found")
	f.do("POST", "/api/v1/clients/"+clientID+"/backups", "operator", map[string]any{"paths": []string{}}).WantError(400, "invalid_request")
	r := f.do("POST", "/api/v1/clients/"+clientID+"/backups", "operator", map[string]any{"paths": []string{"/etc"}, "full": true}).Want(201)
	queued := r.Str("backup", "id")
	if r.Str("backup", "state") != "queued" || r.Str("backup", "trigger") != "manual" || r.JSON["backup"].(map[string]any)["full"] != true {
		t.Fatalf("queued = %s", r.Body)
	}
	// An API token's backups have trigger api.
	tok := f.do("POST", "/api/v1/tokens", "operator", map[string]any{"name": "script"}).Want(201).Str("secret")
	r = f.do("POST", "/api/v1/clients/"+clientID+"/backups", tok, map[string]any{"paths": []string{"/var"}}).Want(201)
	scripted := r.Str("backup", "id")
	if r.Str("backup", "trigger") != "api" {
		t.Fatalf("scripted = %s", r.Body)
	}
	cmds, err := f.db.PendingCommands(ctx, clientID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 2 || cmds[0].Kind != protocol.CommandBackup || !strings.Contains(string(cmds[0].Payload), queued) {
		t.Fatalf("commands = %+v", cmds)
	}

	// The first is canceled while queued; the agent then cannot start it.
	r = f.do("POST", "/api/v1/backups/"+queued+"/cancel", "operator", nil).Want(200)
	if r.JSON["success"] != true || r.JSON["id"] != queued {
		t.Fatalf("cancel = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"backup_id": queued}).WantError(409, "backup_not_queued")
	f.do("POST", "/api/v1/backups/"+queued+"/cancel", "operator", nil).WantError(409, "backup_finished")
	f.do("POST", "/api/v1/backups/"+queued+"/cancel", "viewer", nil).WantError(403, "forbidden")

	// The second starts, is canceled while running, and the agent stops.
	r = f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"backup_id": scripted}).Want(201)
	if r.Str("backup", "state") != "running" || !slices.Equal(toStrings(r.JSON["backup"].(map[string]any)["paths"]), []string{"/var"}) {
		t.Fatalf("started = %s", r.Body)
	}
	f.do("POST", "/api/v1/backups/"+scripted+"/cancel", "operator", nil).Want(200)
	cmds, err = f.db.PendingCommands(ctx, clientID, 10)
	if err != nil {
		t.Fatal(err)
	}
	last := cmds[len(cmds)-1]
	if last.Kind != protocol.CommandCancel || !strings.Contains(string(last.Payload), scripted) {
		t.Fatalf("commands = %+v", cmds)
	}
	r = f.do("GET", "/api/v1/backups/"+scripted, "viewer", nil).Want(200)
	if r.JSON["backup"].(map[string]any)["cancel_requested"] != true {
		t.Fatalf("backup = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/backups/"+scripted+"/fail", "web", map[string]any{"state": "canceled", "error": "canceled on the server"}).Want(200)
	f.do("POST", "/api/v1/agent/backups/"+scripted+"/fail", "web", map[string]any{"state": "succeeded", "error": "x"}).WantError(400, "invalid_request")

	// Filters and cursor pages.
	r = f.do("GET", "/api/v1/backups?state=canceled&client_id="+clientID+"&page_size=1", "viewer", nil).Want(200)
	page := r.JSON["pagination"].(map[string]any)
	if len(r.JSON["items"].([]any)) != 1 || page["has_next_page"] != true || page["total"] != float64(-1) {
		t.Fatalf("page 1 = %s", r.Body)
	}
	first := r.JSON["items"].([]any)[0].(map[string]any)["id"]
	r = f.do("GET", "/api/v1/backups?state=canceled&client_id="+clientID+"&page_size=1&cursor="+page["cursor"].(string), "viewer", nil).Want(200)
	items := r.JSON["items"].([]any)
	if len(items) != 1 || items[0].(map[string]any)["id"] == first || r.JSON["pagination"].(map[string]any)["has_next_page"] != false {
		t.Fatalf("page 2 = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/backups?state=running&state=queued", "viewer", nil).Want(200)
	if len(r.JSON["items"].([]any)) != 0 {
		t.Fatalf("running or queued = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/backups?client_id=other", "viewer", nil).Want(200)
	if len(r.JSON["items"].([]any)) != 0 {
		t.Fatalf("other client's = %s", r.Body)
	}
	r = f.do("GET", "/api/v1/backups?since="+time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "viewer", nil).Want(200)
	if len(r.JSON["items"].([]any)) != 0 {
		t.Fatalf("since the future = %s", r.Body)
	}
	byTrigger := map[string]int{}
	for _, it := range f.do("GET", "/api/v1/backups?page_size=500", "viewer", nil).Want(200).JSON["items"].([]any) {
		byTrigger[it.(map[string]any)["trigger"].(string)]++
	}
	if len(byTrigger) < 2 {
		t.Fatalf("backups by trigger = %v: the filter cannot be told from no filter", byTrigger)
	}
	for _, trig := range []string{"schedule", "manual", "api"} {
		items := f.do("GET", "/api/v1/backups?page_size=500&trigger="+trig, "viewer", nil).Want(200).JSON["items"].([]any)
		if len(items) != byTrigger[trig] {
			t.Errorf("trigger=%s: %d backups, want %d", trig, len(items), byTrigger[trig])
		}
	}
	f.do("GET", "/api/v1/backups?state=bogus", "viewer", nil).WantError(400, "invalid_request")
	f.do("GET", "/api/v1/backups?trigger=bogus", "viewer", nil).WantError(400, "invalid_request")
	f.do("GET", "/api/v1/backups?cursor=garbage", "viewer", nil).WantError(400, "invalid_cursor")
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestUploadRouteLimitAndDocument(t *testing.T) {
	f := newBackupFixture(t, metadbtest.Open(t, metadb.SQLite), backups.Options{})
	f.enrollBackupAgent("web")
	r := f.do("POST", "/api/v1/agent/backups", "web", map[string]any{"paths": []string{"/srv"}}).Want(201)
	id := r.Str("backup", "id")
	// A body larger than the limit is refused without being stored.
	big := make([]byte, 32<<20+1)
	f.do("POST", "/api/v1/agent/blobs?backup_id="+id, "web", string(big), "Content-Type", protocol.MediaType).
		WantError(413, "upload_too_large")

	// The binary body is in the API description.
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).Want(200)
	op := doc.JSON["paths"].(map[string]any)["/api/v1/agent/blobs"].(map[string]any)["post"].(map[string]any)
	content := op["requestBody"].(map[string]any)["content"].(map[string]any)
	schema := content[protocol.MediaType].(map[string]any)["schema"].(map[string]any)
	if schema["type"] != "string" || schema["format"] != "binary" || len(content) != 1 {
		t.Fatalf("upload request body = %v", op["requestBody"])
	}
	// Every backup route is documented and served.
	var documented []string
	for path, item := range doc.JSON["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	for _, want := range []string{"POST /api/v1/agent/backups", "GET /api/v1/agent/backups", "POST /api/v1/agent/blobs/check",
		"POST /api/v1/agent/blobs", "POST /api/v1/agent/backups/{id}/progress", "POST /api/v1/agent/backups/{id}/commit",
		"POST /api/v1/agent/backups/{id}/fail", "GET /api/v1/agent/backups/{id}/tree", "GET /api/v1/backups",
		"GET /api/v1/backups/{id}", "GET /api/v1/backups/{id}/tree", "POST /api/v1/backups/{id}/cancel",
		"POST /api/v1/clients/{id}/backups"} {
		if !slices.Contains(documented, want) || !slices.Contains(f.api.Patterns(), want) {
			t.Errorf("%s: documented %v, served %v", want, slices.Contains(documented, want), slices.Contains(f.api.Patterns(), want))
		}
	}
}

// TestBackupRoutesAccess checks every backup route against every kind of
// caller: none gets 401; people reach only the user routes their role
// allows, agents only the agent routes.
func TestBackupRoutesAccess(t *testing.T) {
	f := newBackupFixture(t, metadbtest.Open(t, metadb.SQLite), backups.Options{})
	f.enrollBackupAgent("web")
	holds := map[string][]string{"viewer": {"read"}, "operator": {"read", "operate"}, "admin": {"read", "operate", "manage"},
		"web": {"agent"}}
	checked := 0
	for path, item := range f.api.OpenAPI().Paths {
		if !strings.Contains(path, "backups") && !strings.HasPrefix(path, "/api/v1/agent/blobs") {
			continue
		}
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post} {
			if op == nil || (strings.HasPrefix(path, "/api/v1/agent/blobs/") && path != "/api/v1/agent/blobs/check") {
				continue // E3's restore blob routes
			}
			checked++
			url := strings.ReplaceAll(path, "{id}", "x")
			perm := op.Extensions["x-coffer-permission"].(string)
			f.do(method, url, "", nil).WantError(401, "authentication_required")
			for who, perms := range holds {
				r := f.do(method, url, who, map[string]any{})
				forbidden := r.Status == 403 && r.JSON["code"] == "forbidden"
				if want := !slices.Contains(perms, perm); forbidden != want {
					t.Errorf("%s %s as %s: status %d (%s), want forbidden=%v", method, path, who, r.Status, r.Body, want)
				}
			}
		}
	}
	if checked != 16 {
		t.Errorf("checked %d backup routes, want 16", checked)
	}
}
