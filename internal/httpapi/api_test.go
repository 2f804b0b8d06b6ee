package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/repository/repotest"
	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
	"github.com/cofferhq/coffer/internal/server/backups"
	"github.com/cofferhq/coffer/internal/server/plans"
	"github.com/cofferhq/coffer/internal/server/repos"
	"github.com/cofferhq/coffer/internal/server/restores"
	"github.com/danielgtaylor/huma/v2"
)

func TestLoginAndRoles(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		me := f.do("GET", "/api/v1/auth/me", "viewer", nil).Want(200)
		user := me.JSON["user"].(map[string]any)
		if user["username"] != "viewer" || user["role"] != "viewer" || user["password_hash"] != nil {
			t.Errorf("me = %s", me.Body)
		}
		if perms := me.JSON["credential"].(map[string]any)["permissions"]; fmt.Sprint(perms) != "[read]" {
			t.Errorf("viewer permissions = %v", perms)
		}

		// Viewers and operators cannot manage users.
		newUser := map[string]any{"username": "eve", "password": "eve-password", "role": "admin"}
		f.do("POST", "/api/v1/users", "viewer", newUser).WantError(403, "forbidden")
		f.do("POST", "/api/v1/users", "operator", newUser).WantError(403, "forbidden")
		// No credential, a bad one, a malformed header.
		f.do("GET", "/api/v1/auth/me", "", nil).WantError(401, "authentication_required")
		r := f.do("GET", "/api/v1/auth/me", "cfr_s_bogus", nil).WantError(401, "invalid_token")
		if r.Header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		f.do("GET", "/api/v1/auth/me", "", nil, "Authorization", "Basic YWRtaW46eA==").WantError(401, "invalid_authorization_header")

		// Wrong password: 401 envelope; the 6th rapid one: 429 with retry_after_seconds.
		bad := map[string]any{"username": "operator", "password": "not-the-password"}
		for range 5 {
			f.do("POST", "/api/v1/auth/login", "", bad).WantError(401, "invalid_credentials")
		}
		r = f.do("POST", "/api/v1/auth/login", "", bad).WantError(429, "too_many_login_attempts")
		if secs, _ := r.JSON["metadata"].(map[string]any)["retry_after_seconds"].(float64); secs < 1 || r.Header.Get("Retry-After") == "" {
			t.Errorf("429 lacks retry_after_seconds or Retry-After: %s %v", r.Body, r.Header)
		}
	})
}

func TestSessionCookie(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.do("POST", "/api/v1/auth/login", "", map[string]any{"username": "admin", "password": "admin-password"}).Want(200)
		cookie := r.Header.Get("Set-Cookie")
		for _, want := range []string{SessionCookie + "=cfr_s_", "HttpOnly", "SameSite=Lax", "Path=/"} {
			if !strings.Contains(cookie, want) {
				t.Errorf("Set-Cookie %q lacks %q", cookie, want)
			}
		}
		if r.Header.Get("Cache-Control") != "no-store" || r.JSON["token_type"] != "bearer" || r.JSON["expires_at"] == nil {
			t.Errorf("login response: %v %s", r.Header, r.Body)
		}
		value := strings.TrimPrefix(strings.Split(cookie, ";")[0], SessionCookie+"=")
		f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+value).Want(200)
		// A cross-site state change with the cookie is refused.
		f.do("POST", "/api/v1/auth/logout", "", nil, "Cookie", SessionCookie+"="+value,
			"Sec-Fetch-Site", "cross-site").WantError(403, "cross_origin_request")
		out := f.do("POST", "/api/v1/auth/logout", "", nil, "Cookie", SessionCookie+"="+value, "Sec-Fetch-Site", "same-origin").Want(200)
		if out.JSON["success"] != true || !strings.Contains(out.Header.Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("logout: %s %v", out.Body, out.Header)
		}
		f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+value).WantError(401, "invalid_token")
	})
}

func TestUsersAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		created := f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "zed", "password": "zed-password", "role": "viewer"}).Want(201)
		u := created.JSON["user"].(map[string]any)
		id := u["id"].(string)
		if u["last_login_at"] != nil || u["disabled"] != false {
			t.Errorf("created user = %s", created.Body)
		}
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "ZED", "password": "zed-password", "role": "viewer"}).
			WantError(409, "username_taken")

		list := f.do("GET", "/api/v1/users?page=1&page_size=2", "admin", nil).Want(200)
		p := list.JSON["pagination"].(map[string]any)
		if len(list.JSON["items"].([]any)) != 2 || p["total"] != 4.0 || p["total_pages"] != 2.0 || p["has_next_page"] != true ||
			p["has_prev_page"] != false || p["pagination_mode"] != "offset" || p["cursor"] != nil || p["page_size"] != 2.0 {
			t.Errorf("page 1 = %s", list.Body)
		}
		list = f.do("GET", "/api/v1/users?role=viewer", "admin", nil).Want(200)
		if len(list.JSON["items"].([]any)) != 2 {
			t.Errorf("viewers = %s", list.Body)
		}
		f.do("GET", "/api/v1/users?role=root", "admin", nil).WantError(400, "invalid_request")
		f.do("GET", "/api/v1/users?page_size=100000", "admin", nil).WantError(400, "invalid_request")
		f.do("GET", "/api/v1/users?colour=blue", "admin", nil).WantError(400, "invalid_request")

		r := f.do("PATCH", "/api/v1/users/"+id, "admin", map[string]any{"role": "operator", "disabled": true}).Want(200)
		if u := r.JSON["user"].(map[string]any); u["role"] != "operator" || u["disabled"] != true {
			t.Errorf("patched = %s", r.Body)
		}
		f.do("GET", "/api/v1/users/nope", "admin", nil).WantError(404, "user_not_found")
		adminID := f.userID("admin")
		f.do("PATCH", "/api/v1/users/"+adminID, "admin", map[string]any{"disabled": true}).WantError(409, "cannot_disable_self")
		f.do("DELETE", "/api/v1/users/"+adminID, "admin", nil).WantError(409, "cannot_delete_self")
		del := f.do("DELETE", "/api/v1/users/"+id, "admin", nil).Want(200)
		if del.JSON["success"] != true || del.JSON["id"] != id || del.JSON["message"] == "" {
			t.Errorf("delete = %s", del.Body)
		}

		// Passwords: own with the old one, others' only as admin.
		viewerID := f.userID("viewer")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "viewer", map[string]any{"new_password": "brand-new-pw"}).
			WantError(400, "invalid_old_password")
		f.do("PUT", "/api/v1/users/"+adminID+"/password", "viewer", map[string]any{"new_password": "brand-new-pw"}).
			WantError(403, "forbidden")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "viewer",
			map[string]any{"old_password": "viewer-password", "new_password": "brand-new-pw"}).Want(200)
		f.login("viewer", "brand-new-pw")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "admin", map[string]any{"new_password": "admin-set-pw"}).Want(200)
		f.login("viewer", "admin-set-pw")
	})
}

func TestValidationErrors(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		fieldsOf := func(r *apitest.Reply) []string {
			var out []string
			for _, fe := range r.JSON["metadata"].(map[string]any)["fields"].([]any) {
				out = append(out, fe.(map[string]any)["location"].(string))
			}
			return out
		}
		// Unknown field.
		r := f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "a", "password": "long-enough",
			"role": "viewer", "is_admin": true}).WantError(400, "invalid_request")
		if !slices.Contains(fieldsOf(r), "body.is_admin") {
			t.Errorf("unknown field not named: %s", r.Body)
		}
		// Wrong type.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": 42, "password": "long-enough", "role": "viewer"}).
			WantError(400, "invalid_request")
		if !slices.Contains(fieldsOf(r), "body.username") {
			t.Errorf("wrong type not named: %s", r.Body)
		}
		// Invalid value, missing field.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "a", "role": "root"}).WantError(400, "invalid_request")
		if fs := fieldsOf(r); !slices.Contains(fs, "body.role") || !slices.Contains(fs, "body.password") {
			t.Errorf("fields = %v", fs)
		}
		// Malformed JSON and a body that is too large.
		f.do("POST", "/api/v1/users", "admin", `{"username": `).WantError(400, "invalid_request")
		big := `{"username":"` + strings.Repeat("a", 2<<20) + `"}`
		r = f.do("POST", "/api/v1/users", "admin", big).WantError(413, "request_too_large")
		if r.JSON["metadata"].(map[string]any)["limit_bytes"] != float64(1<<20) {
			t.Errorf("413 metadata = %s", r.Body)
		}
		// Domain validation from the service layer carries the field too.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "bad name", "password": "long-enough", "role": "viewer"}).
			WantError(400, "invalid_username")
		if r.JSON["metadata"].(map[string]any)["field"] != "username" {
			t.Errorf("metadata = %s", r.Body)
		}
	})
}

func TestRoutingErrorsAndRequestIDs(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	f.do("GET", "/api/v1/nope", "admin", nil).WantError(404, "route_not_found")
	f.do("GET", "/api/nope", "", nil).WantError(404, "route_not_found") // outside /api/, browsers get the UI (ui_test.go)
	r := f.do("DELETE", "/api/v1/auth/me", "admin", nil).WantError(405, "method_not_allowed")
	if !strings.Contains(r.Header.Get("Allow"), "GET") {
		t.Errorf("Allow = %q", r.Header.Get("Allow"))
	}
	// A sane request id is echoed; an insane one is replaced.
	r = f.do("GET", "/api/v1/nope", "", nil, "X-Request-Id", "trace-abc.123").WantError(404, "route_not_found")
	if r.Header.Get("X-Request-Id") != "trace-abc.123" {
		t.Errorf("X-Request-Id = %q", r.Header.Get("X-Request-Id"))
	}
	r = f.do("GET", "/healthz", "", nil, "X-Request-Id", "bad id with spaces").Want(200)
	if id := r.Header.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
		t.Errorf("X-Request-Id = %q", id)
	}
}

func TestPanicBecomes500(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	handle(f.api, Public, huma.Operation{OperationID: "boom", Method: "GET", Path: "/api/v1/test/boom"},
		func(context.Context, *struct{}) (*struct{}, error) { panic("secret internal state") })
	handle(f.api, Public, huma.Operation{OperationID: "fail", Method: "GET", Path: "/api/v1/test/fail"},
		func(context.Context, *struct{}) (*struct{}, error) { return nil, errors.New("pq: password=hunter2") })
	for _, path := range []string{"/api/v1/test/boom", "/api/v1/test/fail"} {
		r := f.do("GET", path, "", nil).WantError(500, "internal_error")
		if strings.Contains(string(r.Body), "secret") || strings.Contains(string(r.Body), "hunter2") {
			t.Errorf("%s leaks internals: %s", path, r.Body)
		}
	}
}

func TestReadinessAndHealth(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	r := f.do("GET", "/readyz", "", nil).Want(200)
	if r.JSON["status"] != "ready" || r.JSON["failed_count"] != 0.0 {
		t.Errorf("ready = %s", r.Body)
	}
	f.ready.err = errors.New("database unreachable")
	r = f.do("GET", "/readyz", "", nil).WantError(503, "not_ready")
	check := r.JSON["checks"].([]any)[0].(map[string]any)
	if r.JSON["status"] != "not_ready" || r.JSON["failed_count"] != 1.0 || check["name"] != "switch" ||
		check["healthy"] != false || check["message"] != "database unreachable" {
		t.Errorf("not ready = %s", r.Body)
	}
	f.do("GET", "/healthz", "", nil).Want(200)
	h := f.do("GET", "/api/v1/health", "viewer", nil).Want(200)
	if h.JSON["status"] != "ok" || h.JSON["version"] != "test" {
		t.Errorf("health = %s", h.Body)
	}
	m := f.do("GET", "/metrics", "viewer", nil).Want(200)
	for _, want := range []string{"coffer_http_request_duration_seconds_bucket", `route="GET /readyz"`, `status_class="5xx"`,
		"coffer_http_requests_in_flight"} {
		if !strings.Contains(string(m.Body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	v := f.do("GET", "/api", "", nil).Want(200)
	if !strings.Contains(string(v.Body), `"id":"v1"`) {
		t.Errorf("/api = %s", v.Body)
	}
}

// TestOpenAPIMatchesRoutes holds the document and the mux against each
// other: every registered route is documented, every documented route is
// served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).Want(200)
	if doc.JSON["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %v", doc.JSON["openapi"])
	}
	var documented []string
	for path, item := range doc.JSON["paths"].(map[string]any) {
		for method := range item.(map[string]any) {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	registered := f.api.Patterns()
	sort.Strings(documented)
	sort.Strings(registered)
	if !slices.Equal(documented, registered) {
		t.Errorf("document and routes differ:\ndocumented: %v\nregistered: %v", documented, registered)
	}
	for _, op := range documented {
		method, path, _ := strings.Cut(op, " ")
		path = strings.ReplaceAll(path, "{id}", "x")
		r := f.do(method, path, "", nil)
		if code, _ := r.JSON["code"].(string); code == "route_not_found" || code == "method_not_allowed" {
			t.Errorf("documented %s is not served: %s", op, r.Body)
		}
	}
	// The error schema is Coffer's envelope, not problem+json.
	if strings.Contains(string(doc.Body), "problem+json") {
		t.Error("document mentions problem+json")
	}
	schemas := doc.JSON["components"].(map[string]any)["schemas"].(map[string]any)
	props := schemas["APIError"].(map[string]any)["properties"].(map[string]any)
	for _, k := range []string{"code", "detail", "metadata", "correlation_id"} {
		if props[k] == nil {
			t.Errorf("APIError schema lacks %s", k)
		}
	}
}

// TestAuthorizationMatrix checks every documented route against every role:
// a role lacking the route's permission gets 403, one holding it never does,
// and only the routes meant to be public answer without a credential. A
// second operator, "stranger", owns no client: the routes that act on one
// (listed in owned, called with real ids and valid bodies) refuse them
// with client_not_owned; every other route treats them as any operator.
func TestAuthorizationMatrix(t *testing.T) {
	db := metadbtest.Open(t, metadb.SQLite)
	repo := repotest.New(t, repotest.Options{Encrypted: true})
	// Every service, so that every route of the server is in the matrix.
	f := newFixtureWith(t, db, func(f *fixture, o *Options) {
		ag := agents.New(agents.Options{Store: db, Events: f.hub})
		set := repos.New(repo, nil)
		bk := backups.New(backups.Options{Store: db, Repos: set, Events: f.hub, Commands: ag, Clients: ag})
		o.Agents, o.Backups = ag, bk
		o.Restores = restores.New(restores.Options{Store: db, Repos: set, Events: f.hub, Commands: ag, Clients: ag})
		o.Plans = plans.New(plans.Options{Store: db, Clients: ag, Backups: bk, Events: f.hub, DefaultRepositoryID: repo.Config().ID})
		// Storage: endpoints and repositories (reads for every role, the rest manage).
		o.Storage = newStorageService(t, db, f.hub)
		// End of storage.
	})
	doc := f.api.OpenAPI()
	// --- agentcmds: routes that must be in the matrix, with their permission ---
	for name, perm := range map[string]string{"GET /api/v1/agent/plans": "agent"} {
		method, path, _ := strings.Cut(name, " ")
		item := doc.Paths[path]
		if item == nil || method != "GET" || item.Get == nil || item.Get.Extensions["x-coffer-permission"] != perm {
			t.Errorf("%s is not registered as a route needing the %s permission", name, perm)
		}
	}
	// --- end agentcmds ---
	wantPublic := []string{"GET /api", "GET /api/v1/openapi.json", "GET /healthz", "GET /readyz",
		"POST /api/v1/agent/enroll", "POST /api/v1/auth/login"}
	var public []string
	holds := map[string][]string{"viewer": {"read"}, "operator": {"read", "operate"}, "admin": {"read", "operate", "manage"},
		"agent": {"agent"}, "stranger": {"read", "operate"}}
	f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "stranger", "password": "stranger-password", "role": "operator"}).Want(201)
	f.tokens["stranger"] = f.login("stranger", "stranger-password")
	// API tokens, so that calling logout does not end the role's credential.
	for _, role := range []string{"viewer", "operator", "admin", "stranger"} {
		r := f.do("POST", "/api/v1/tokens", role, map[string]any{"name": "matrix"}).Want(201)
		f.tokens[role] = r.JSON["secret"].(string)
	}
	// The operator's token enrolls the agent: the operator owns its client.
	secret := f.do("POST", "/api/v1/enrollment-tokens", "operator", map[string]any{"name": "matrix"}).Want(201).Str("secret")
	enrolled := f.do("POST", "/api/v1/agent/enroll", "", map[string]any{"token": secret, "hostname": "matrix",
		"os": "linux", "arch": "amd64", "ipv4": []string{}, "ipv6": []string{}, "agent_version": "test"}).Want(201)
	f.tokens["agent"] = enrolled.Str("credential")
	owned := ownedRoutes(t, f, enrolled.Str("client", "id"))
	seen := map[string]bool{}
	for path, item := range doc.Paths {
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put,
			"PATCH": item.Patch, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			name := method + " " + path
			url := strings.NewReplacer("{id}", "x", "{request_id}", "x").Replace(path)
			perm, _ := op.Extensions["x-coffer-permission"].(string)
			if perm == "" {
				public = append(public, name)
				continue
			}
			f.do(method, url, "", nil).WantError(401, "authentication_required")
			if name == "GET /api/v1/events" {
				continue // a stream: its access is tested in the events tests
			}
			for role, perms := range holds {
				if name == "GET /api/v1/agent/stream" && role == "agent" {
					continue // a stream: the agents tests cover it
				}
				if target, ok := owned[name]; ok && role == "stranger" {
					seen[name] = true
					r := f.do(method, target.url, role, target.body)
					if r.Status != 403 || r.JSON["code"] != "client_not_owned" {
						t.Errorf("%s as an operator who does not own the client: status %d (%s), want 403 client_not_owned",
							name, r.Status, r.Body)
					}
					continue
				}
				r := f.do(method, url, role, map[string]any{})
				got := r.Status == 403 && r.JSON["code"] == "forbidden" && r.JSON["metadata"].(map[string]any)["required_permission"] != nil
				if want := !slices.Contains(perms, perm); got != want {
					t.Errorf("%s as %s: status %d (%s), want forbidden=%v", name, role, r.Status, r.Body, want)
				}
			}
		}
	}
	sort.Strings(public)
	if !slices.Equal(public, wantPublic) {
		t.Errorf("public routes = %v, want %v", public, wantPublic)
	}

	// --- records (forget, restore history): the permission each route requires.
	for name, want := range map[string]string{
		"GET /api/v1/backups/{id}":     "read",
		"DELETE /api/v1/backups/{id}":  "manage",
		"DELETE /api/v1/restores/{id}": "operate", // and MayOperate on the restore's target client
	} {
		method, path, _ := strings.Cut(name, " ")
		item := doc.Paths[path]
		if item == nil {
			t.Errorf("%s is not registered", name)
			continue
		}
		op := map[string]*huma.Operation{"GET": item.Get, "DELETE": item.Delete}[method]
		if op == nil || op.Extensions["x-coffer-permission"] != want {
			t.Errorf("%s: not registered with permission %s", name, want)
		}
	}
	// --- end records

	// --- Browse routes (file, archive, versions): beyond the permission, a
	// download acts on the backup's client, so an operator who does not own
	// it is refused. The client is enrolled with the admin's token. ---
	secret = f.do("POST", "/api/v1/enrollment-tokens", "admin", map[string]any{"name": "browse"}).Want(201).Str("secret")
	f.tokens["browse"] = f.do("POST", "/api/v1/agent/enroll", "", map[string]any{"token": secret, "hostname": "browse",
		"os": "linux", "arch": "amd64", "ipv4": []string{}, "ipv6": []string{}, "agent_version": "test"}).Want(201).Str("credential")
	var start protocol.StartBackupResponse
	if err := json.Unmarshal(f.do("POST", "/api/v1/agent/backups", "browse", map[string]any{"paths": []string{"/srv"}}).Want(201).Body,
		&start); err != nil {
		t.Fatal(err)
	}
	root, blobs := bkTree(t, &start)
	f.do("POST", "/api/v1/agent/blobs?backup_id="+start.Backup.ID, "browse", string(bkFrames(t, blobs...)),
		"Content-Type", protocol.MediaType).Want(200)
	f.do("POST", "/api/v1/agent/backups/"+start.Backup.ID+"/commit", "browse", protocol.CommitRequest{RootTree: root.String(),
		Errors: []coffer.PathError{}, StartedAt: time.Now().UTC()}).Want(200)
	browse := "/api/v1/backups/" + start.Backup.ID
	for _, c := range []struct{ route, role, code string }{
		{"/file?path=b.bin", "viewer", "forbidden"}, {"/file?path=b.bin", "operator", "client_not_owned"},
		{"/file?path=b.bin", "admin", ""}, {"/file?path=b.bin", "browse", "forbidden"},
		{"/archive?path=docs&format=zip", "viewer", "forbidden"}, {"/archive?path=docs", "operator", "client_not_owned"},
		{"/archive?path=docs", "admin", ""}, {"/archive?path=docs", "browse", "forbidden"},
		{"/versions?path=b.bin", "viewer", ""}, {"/versions?path=b.bin", "operator", ""}, {"/versions?path=b.bin", "browse", "forbidden"},
		{"/tree?path=docs", "viewer", ""},
	} {
		if r := f.do("GET", browse+c.route, c.role, nil); c.code == "" {
			r.Want(200)
		} else {
			r.WantError(403, c.code)
		}
	}
	// --- end of browse routes ---

	for name := range owned {
		if !seen[name] {
			t.Errorf("%s is in owned but not a route", name)
		}
	}
}

// ownedRoute is a request that acts on the matrix's client: a real id and
// a body valid enough to reach the ownership check.
type ownedRoute struct {
	url  string
	body any
}

// ownedRoutes makes the matrix's records of the client (owned by the
// fixture's operator) — a queued and a succeeded backup, a restore, a plan
// — and returns, by route, a request acting on each.
func ownedRoutes(t *testing.T, f *fixture, clientID string) map[string]ownedRoute {
	t.Helper()
	ctx := context.Background()
	queued := &coffer.Backup{ClientID: clientID, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}}
	done := &coffer.Backup{ClientID: clientID, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}, State: coffer.JobRunning}
	for _, b := range []*coffer.Backup{queued, done} {
		if err := f.db.CreateBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.db.FinishBackup(ctx, done.ID, metadb.BackupFinish{State: coffer.JobSucceeded, RootTree: strings.Repeat("ab", 32)}); err != nil {
		t.Fatal(err)
	}
	restore := &coffer.Restore{BackupID: done.ID, SourceClientID: clientID, TargetClientID: clientID, Destination: "/r"}
	if err := f.db.CreateRestore(ctx, restore); err != nil {
		t.Fatal(err)
	}
	plan := map[string]any{"name": "matrix", "client_id": clientID, "include": []string{"/etc"}}
	planID := f.do("POST", "/api/v1/plans", "operator", plan).Want(201).Str("plan", "id")
	return map[string]ownedRoute{
		"PATCH /api/v1/clients/{id}":        {"/api/v1/clients/" + clientID, map[string]any{"name": "mine now"}},
		"GET /api/v1/clients/{id}/fs":       {"/api/v1/clients/" + clientID + "/fs?path=/", nil},
		"POST /api/v1/clients/{id}/backups": {"/api/v1/clients/" + clientID + "/backups", map[string]any{"paths": []string{"/etc"}}},
		"POST /api/v1/backups/{id}/cancel":  {"/api/v1/backups/" + queued.ID + "/cancel", nil},
		"POST /api/v1/plans":                {"/api/v1/plans", plan},
		"PUT /api/v1/plans/{id}":            {"/api/v1/plans/" + planID, plan},
		"DELETE /api/v1/plans/{id}":         {"/api/v1/plans/" + planID, nil},
		"POST /api/v1/plans/{id}/run":       {"/api/v1/plans/" + planID + "/run", nil},
		"POST /api/v1/restores":             {"/api/v1/restores", map[string]any{"backup_id": done.ID, "destination": "/r"}},
		"POST /api/v1/restores/{id}/cancel": {"/api/v1/restores/" + restore.ID + "/cancel", nil},
		"DELETE /api/v1/restores/{id}":      {"/api/v1/restores/" + restore.ID, nil},
		"GET /api/v1/backups/{id}/file":     {"/api/v1/backups/" + done.ID + "/file?path=etc/hosts", nil},
		"GET /api/v1/backups/{id}/archive":  {"/api/v1/backups/" + done.ID + "/archive?path=etc", nil},
	}
}
