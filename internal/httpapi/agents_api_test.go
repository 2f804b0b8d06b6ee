package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/danielgtaylor/huma/v2"
)

// agentFixture is the API fixture with the agents service wired in.
type agentFixture struct {
	*fixture
	agents *agents.Service
}

func newAgentFixture(t testing.TB, db *metadb.DB, opts agents.Options) *agentFixture {
	t.Helper()
	af := &agentFixture{}
	af.fixture = newFixtureWith(t, db, func(f *fixture, o *Options) {
		opts.Store, opts.Events = db, f.hub
		af.agents = agents.New(opts)
		o.Agents = af.agents
	})
	return af
}

var testMachine = map[string]any{"hostname": "web-1", "os": "linux", "arch": "amd64",
	"ipv4": []string{"192.0.2.10"}, "ipv6": []string{"2001:db8::10"}, "agent_version": "1.2.3"}

// enroll creates a token as the operator and enrolls a machine with it,
// returning the client id and its credential.
func (f *agentFixture) enroll(name string) (id, credential string) {
	f.t.Helper()
	secret := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"name": name}).Want(201).Str("secret")
	body := map[string]any{"token": secret}
	for k, v := range testMachine {
		body[k] = v
	}
	r := f.do("POST", "/api/v1/agent/enroll", "", body).Want(201)
	return r.Str("client", "id"), r.Str("credential")
}

// openAgentStream opens GET /api/v1/agent/stream with a credential.
func openAgentStream(t *testing.T, url, credential string) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/agent/stream", nil)
	req.Header.Set("Authorization", "Bearer "+credential)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("open agent stream: %v %v", resp, err)
	}
	s := &rawStream{lines: make(chan string, 100), cancel: cancel}
	go func() {
		defer close(s.lines)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(cancel)
	return s
}

// nextCommand reads the next command event of a stream.
func nextCommand(t *testing.T, st *rawStream) protocol.Command {
	t.Helper()
	if _, ended := st.waitLine(t, "event: command"); ended {
		t.Fatal("stream ended before a command")
	}
	idLine, _ := st.waitLine(t, "id: ")
	data, ended := st.waitLine(t, "data: ")
	if ended {
		t.Fatal("stream ended inside a command")
	}
	var cmd protocol.Command
	if err := json.Unmarshal([]byte(strings.TrimPrefix(data, "data: ")), &cmd); err != nil {
		t.Fatalf("command data %q: %v", data, err)
	}
	if cmd.ID == "" || "id: "+cmd.ID != idLine {
		t.Fatalf("command id %q, SSE %q", cmd.ID, idLine)
	}
	return cmd
}

func TestEnrollmentAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		f.do("POST", "/api/v1/enrollment-tokens", "viewer", map[string]any{}).WantError(403, "forbidden")
		f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"expires_in_seconds": 30}).WantError(400, "invalid_request")
		r := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"name": "web", "expires_in_seconds": 600}).Want(201)
		tok, _ := r.JSON["enrollment_token"].(map[string]any)
		secret := r.Str("secret")
		if r.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(secret, protocol.EnrollPrefix) ||
			tok["name"] != "web" || tok["id"] == "" || tok["created_at"] == nil || len(tok) != 4 {
			t.Fatalf("token response: %v %s", r.Header, r.Body)
		}
		created, _ := time.Parse(time.RFC3339, tok["created_at"].(string))
		expires, _ := time.Parse(time.RFC3339, tok["expires_at"].(string))
		if d := expires.Sub(created); d < 599*time.Second || d > 601*time.Second {
			t.Errorf("token lives %s, want 10 min", d)
		}

		body := map[string]any{"token": secret}
		for k, v := range testMachine {
			body[k] = v
		}
		body["colour"] = "blue"
		f.do("POST", "/api/v1/agent/enroll", "", body).WantError(400, "invalid_request")
		delete(body, "colour")
		r = f.do("POST", "/api/v1/agent/enroll", "", body).Want(201)
		id, credential := r.Str("client", "id"), r.Str("credential")
		if r.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(credential, protocol.CredentialPrefix) ||
			r.Str("client", "name") != "web" || r.JSON["heartbeat_seconds"] != 15.0 {
			t.Fatalf("enroll response: %v %s", r.Header, r.Body)
		}
		f.do("POST", "/api/v1/agent/enroll", "", body).WantError(401, "enrollment_token_used")
		body["token"] = protocol.EnrollPrefix + "guess"
		f.do("POST", "/api/v1/agent/enroll", "", body).WantError(401, "enrollment_token_invalid")

		c := f.do("GET", "/api/v1/clients/"+id, "viewer", nil).Want(200).JSON["client"].(map[string]any)
		for k, want := range map[string]any{"id": id, "name": "web", "hostname": "web-1", "os": "linux", "arch": "amd64",
			"agent_version": "1.2.3", "owner_id": f.userID("operator"), "status": "online"} {
			if c[k] != want {
				t.Errorf("client %s = %v, want %v", k, c[k], want)
			}
		}
		if c["credential_hash"] != nil || strings.Contains(string(r.Body), "hash") || c["last_seen_at"] == nil ||
			c["ipv4"].([]any)[0] != "192.0.2.10" || c["ipv6"].([]any)[0] != "2001:db8::10" {
			t.Errorf("client = %v", c)
		}
		f.do("GET", "/api/v1/clients/nope", "viewer", nil).WantError(404, "client_not_found")

		f.enroll("db")
		list := f.do("GET", "/api/v1/clients?page_size=1", "viewer", nil).Want(200)
		p := list.JSON["pagination"].(map[string]any)
		if items := list.JSON["items"].([]any); len(items) != 1 || items[0].(map[string]any)["name"] != "db" ||
			p["total"] != 2.0 || p["has_next_page"] != true {
			t.Errorf("list = %s", list.Body)
		}
		list = f.do("GET", "/api/v1/clients?name=WE&status=online&owner_id="+f.userID("operator"), "viewer", nil).Want(200)
		if items := list.JSON["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id {
			t.Errorf("filtered list = %s", list.Body)
		}
		f.do("GET", "/api/v1/clients?status=asleep", "viewer", nil).WantError(400, "invalid_request")
	})
}

// An agent credential reaches only agent routes; no user credential
// reaches them.
func TestAgentCredentialScope(t *testing.T) {
	f := newAgentFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{})
	_, credential := f.enroll("laptop")
	f.do("GET", "/api/v1/users", credential, nil).WantError(403, "forbidden")
	f.do("GET", "/api/v1/clients", credential, nil).WantError(403, "forbidden")
	f.do("POST", "/api/v1/enrollment-tokens", credential, map[string]any{}).WantError(403, "forbidden")
	hb := map[string]any{"running_jobs": []string{}}
	for k, v := range testMachine {
		hb[k] = v
	}
	for _, role := range []string{"admin", "operator", "viewer"} {
		f.do("POST", "/api/v1/agent/heartbeat", role, hb).WantError(403, "forbidden")
	}
	r := f.do("POST", "/api/v1/agent/heartbeat", credential, hb).Want(200)
	if r.JSON["success"] != true || r.JSON["heartbeat_seconds"] != 15.0 || r.JSON["server_time"] == nil {
		t.Errorf("heartbeat = %s", r.Body)
	}
	f.do("POST", "/api/v1/agent/heartbeat", protocol.CredentialPrefix+"forged", hb).WantError(401, "invalid_token")
}

func TestAgentStreamDeliversCommands(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		id, credential := f.enroll("srv")
		queued, err := f.agents.Enqueue(context.Background(), id, protocol.Command{Kind: protocol.CommandCancel,
			Cancel: &protocol.CancelCommand{JobID: "j0"}})
		if err != nil {
			t.Fatal(err)
		}
		st := openAgentStream(t, f.ts.URL, credential)
		if cmd := nextCommand(t, st); cmd.ID != queued || cmd.Kind != protocol.CommandCancel || cmd.Cancel.JobID != "j0" {
			t.Errorf("queued command = %+v", cmd)
		}
		if _, ended := st.waitLine(t, ": heartbeat"); ended {
			t.Fatal("stream ended")
		}
		sent, err := f.agents.Enqueue(context.Background(), id, protocol.Command{Kind: protocol.CommandBackup,
			Backup: &protocol.BackupCommand{BackupID: "b1"}})
		if err != nil {
			t.Fatal(err)
		}
		if cmd := nextCommand(t, st); cmd.ID != sent || cmd.Backup.BackupID != "b1" {
			t.Errorf("live command = %+v", cmd)
		}
		// Both are marked delivered once written (just after the agent may
		// have read them): a new stream would start empty.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			left, err := db.PendingCommands(context.Background(), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("still pending after delivery: %+v", left)
			}
		}
	})
}

func TestClientDirectoryListing(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		id, credential := f.enroll("srv")
		_, otherCredential := f.enroll("intruder")
		st := openAgentStream(t, f.ts.URL, credential)

		got := make(chan map[string]any, 1)
		go func() {
			r := f.do("GET", "/api/v1/clients/"+id+"/fs?path=/etc", "operator", nil)
			if r.Status != 200 {
				t.Errorf("listing: %d %s", r.Status, r.Body)
			}
			got <- r.JSON
		}()
		cmd := nextCommand(t, st)
		if cmd.Kind != protocol.CommandListDir || cmd.ListDir.Path != "/etc" {
			t.Fatalf("command = %+v", cmd)
		}
		answer := map[string]any{"path": "/etc", "entries": []map[string]any{
			{"name": "hosts", "type": "file", "size": 12, "mtime": "2024-05-01T12:00:00Z"}}}
		f.do("POST", "/api/v1/agent/fs/"+cmd.ID, otherCredential, answer).WantError(404, "command_not_found")
		f.do("POST", "/api/v1/agent/fs/"+cmd.ID, "operator", answer).WantError(403, "forbidden")
		r := f.do("POST", "/api/v1/agent/fs/"+cmd.ID, credential, answer).Want(200)
		if r.JSON["success"] != true || r.JSON["id"] != cmd.ID {
			t.Errorf("post listing = %s", r.Body)
		}
		listing := <-got
		entries, _ := listing["entries"].([]any)
		if listing["path"] != "/etc" || len(entries) != 1 || entries[0].(map[string]any)["name"] != "hosts" {
			t.Errorf("listing = %v", listing)
		}

		f.do("GET", "/api/v1/clients/"+id+"/fs?path=/", "viewer", nil).WantError(403, "forbidden")
		f.do("GET", "/api/v1/clients/"+id+"/fs?path=etc", "operator", nil).WantError(400, "invalid_path")
		f.do("GET", "/api/v1/clients/nope/fs", "operator", nil).WantError(404, "client_not_found")
	})
}

func TestClientDirectoryListingTimeoutAndOffline(t *testing.T) {
	var skew atomic.Int64 // how far the service's clock runs ahead
	f := newAgentFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{ListDirTimeout: 50 * time.Millisecond,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }})
	id, _ := f.enroll("silent")
	f.do("GET", "/api/v1/clients/"+id+"/fs", "operator", nil).WantError(504, "agent_timeout")

	skew.Store(int64(time.Hour))
	if err := f.agents.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := f.do("GET", "/api/v1/clients/"+id, "viewer", nil).Want(200).JSON["client"].(map[string]any); c["status"] != "offline" {
		t.Fatalf("client = %v", c)
	}
	f.do("GET", "/api/v1/clients/"+id+"/fs", "operator", nil).WantError(409, "agent_offline")
}

// Deleting a client refuses its credential at once and ends its stream.
func TestDeleteClientRevokesCredential(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		id, credential := f.enroll("old")
		st := openAgentStream(t, f.ts.URL, credential)
		st.waitLine(t, ": heartbeat")
		f.do("DELETE", "/api/v1/clients/"+id, "operator", nil).WantError(403, "forbidden")
		r := f.do("DELETE", "/api/v1/clients/"+id, "admin", nil).Want(200)
		if r.JSON["success"] != true || r.JSON["id"] != id {
			t.Errorf("delete = %s", r.Body)
		}
		hb := map[string]any{"running_jobs": []string{}}
		for k, v := range testMachine {
			hb[k] = v
		}
		r = f.do("POST", "/api/v1/agent/heartbeat", credential, hb).WantError(401, "invalid_token")
		if !strings.Contains(r.Str("detail"), "enroll") {
			t.Errorf("401 does not say to enroll again: %s", r.Body)
		}
		if _, ended := st.waitLine(t, "event: unauthorized"); ended {
			t.Fatal("stream ended without saying why")
		}
		if _, ended := st.waitLine(t, "never"); !ended {
			t.Fatal("the deleted client's stream is still open")
		}
		f.do("GET", "/api/v1/clients/"+id, "viewer", nil).WantError(404, "client_not_found")
	})
}

// TestAgentRoutesDocumentedAndGuarded holds the OpenAPI document against
// the mux with the agent routes wired in, and checks every route's access:
// agent routes refuse every user role and user routes refuse an agent.
func TestAgentRoutesDocumentedAndGuarded(t *testing.T) {
	f := newAgentFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{ListDirTimeout: time.Millisecond})
	_, credential := f.enroll("matrix")
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).Want(200)
	var documented []string
	for path, item := range doc.JSON["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	registered := f.api.Patterns()
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		t.Errorf("document and routes differ:\ndocumented: %v\nregistered: %v", documented, registered)
	}
	for _, want := range []string{"POST /api/v1/enrollment-tokens", "POST /api/v1/agent/enroll", "POST /api/v1/agent/heartbeat",
		"GET /api/v1/agent/stream", "POST /api/v1/agent/fs/{request_id}", "GET /api/v1/clients", "GET /api/v1/clients/{id}",
		"DELETE /api/v1/clients/{id}", "GET /api/v1/clients/{id}/fs", "PATCH /api/v1/clients/{id}", "GET /api/v1/clients/{id}/logs",
		"POST /api/v1/agent/logs"} {
		if !slices.Contains(documented, want) {
			t.Errorf("%s is not documented", want)
		}
	}

	for path, item := range f.api.OpenAPI().Paths {
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put,
			"PATCH": item.Patch, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			name := method + " " + path
			url := strings.NewReplacer("{id}", "x", "{request_id}", "x").Replace(path)
			perm, _ := op.Extensions["x-coffer-permission"].(string)
			if perm == "" {
				if strings.HasPrefix(path, "/api/v1/agent/") && name != "POST /api/v1/agent/enroll" {
					t.Errorf("%s is public", name)
				}
				continue
			}
			if (perm == "agent") != strings.HasPrefix(path, "/api/v1/agent/") {
				t.Errorf("%s requires %q", name, perm)
			}
			if perm == "agent" {
				for _, role := range []string{"admin", "operator", "viewer"} {
					f.do(method, url, role, map[string]any{}).WantError(403, "forbidden")
				}
			} else if name != "GET /api/v1/events" { // a stream: tested in the events tests
				f.do(method, url, credential, map[string]any{}).WantError(403, "forbidden")
			}
		}
	}
}

// The agent's own client (apiclient) speaks this API: enrollment,
// heartbeat, the command stream, a directory listing round trip, and the
// end of the stream when the client is deleted.
func TestAgentClientInterop(t *testing.T) {
	f := newAgentFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{})
	ctx := context.Background()
	secret := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{}).Want(201).Str("secret")
	info := protocol.MachineInfo{Hostname: "interop", OS: "linux", Arch: "arm64", IPv4: []string{}, IPv6: []string{}, AgentVersion: "9"}
	anon, err := apiclient.New(apiclient.Options{Server: f.ts.URL})
	if err != nil {
		t.Fatal(err)
	}
	enrolled, err := anon.Enroll(ctx, protocol.EnrollRequest{Token: secret, MachineInfo: info})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Enroll(ctx, protocol.EnrollRequest{Token: secret, MachineInfo: info}); !apiclient.IsCode(err, "enrollment_token_used") {
		t.Errorf("second enrollment: %v", err)
	}
	c, err := apiclient.New(apiclient.Options{Server: f.ts.URL, Credential: enrolled.Credential})
	if err != nil {
		t.Fatal(err)
	}
	if hb, err := c.Heartbeat(ctx, protocol.HeartbeatRequest{MachineInfo: info}); err != nil || !hb.Success {
		t.Fatalf("heartbeat = %+v, %v", hb, err)
	}
	stream, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()

	got := make(chan *apitest.Reply, 1)
	go func() { got <- f.do("GET", "/api/v1/clients/"+enrolled.Client.ID+"/fs?path=/srv", "operator", nil) }()
	cmd, err := stream.Next()
	if err != nil || cmd.Kind != protocol.CommandListDir || cmd.ListDir.Path != "/srv" {
		t.Fatalf("command = %+v, %v", cmd, err)
	}
	if err := c.CompleteListDir(ctx, cmd.ID, protocol.ListDirResult{Path: "/srv", Entries: []protocol.DirEntry{{Name: "www", Type: "dir"}}}); err != nil {
		t.Fatal(err)
	}
	if r := (<-got).Want(200); len(r.JSON["entries"].([]any)) != 1 {
		t.Errorf("listing = %s", r.Body)
	}

	f.do("DELETE", "/api/v1/clients/"+enrolled.Client.ID, "admin", nil).Want(200)
	if _, err := stream.Next(); !apiclient.IsStatus(err, 401) {
		t.Errorf("stream after deletion: %v", err)
	}
	if _, err := c.Heartbeat(ctx, protocol.HeartbeatRequest{MachineInfo: info}); !apiclient.IsCode(err, "invalid_token") {
		t.Errorf("heartbeat after deletion: %v", err)
	}
}
