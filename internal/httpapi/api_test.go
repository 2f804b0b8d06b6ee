package httpapi

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/danielgtaylor/huma/v2"
)

func TestLoginAndRoles(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		me := f.do("GET", "/api/v1/auth/me", "viewer", nil).want(200)
		user := me.json["user"].(map[string]any)
		if user["username"] != "viewer" || user["role"] != "viewer" || user["password_hash"] != nil {
			t.Errorf("me = %s", me.body)
		}
		if perms := me.json["credential"].(map[string]any)["permissions"]; fmt.Sprint(perms) != "[read]" {
			t.Errorf("viewer permissions = %v", perms)
		}

		// Viewers and operators cannot manage users.
		newUser := map[string]any{"username": "eve", "password": "eve-password", "role": "admin"}
		f.do("POST", "/api/v1/users", "viewer", newUser).wantError(403, "forbidden")
		f.do("POST", "/api/v1/users", "operator", newUser).wantError(403, "forbidden")
		// No credential, a bad one, a malformed header.
		f.do("GET", "/api/v1/auth/me", "", nil).wantError(401, "authentication_required")
		r := f.do("GET", "/api/v1/auth/me", "cfr_s_bogus", nil).wantError(401, "invalid_token")
		if r.header.Get("WWW-Authenticate") == "" {
			t.Error("401 without WWW-Authenticate")
		}
		f.do("GET", "/api/v1/auth/me", "", nil, "Authorization", "Basic YWRtaW46eA==").wantError(401, "invalid_authorization_header")

		// Wrong password: 401 envelope; the 6th rapid one: 429 with retry_after_seconds.
		bad := map[string]any{"username": "operator", "password": "not-the-password"}
		for range 5 {
			f.do("POST", "/api/v1/auth/login", "", bad).wantError(401, "invalid_credentials")
		}
		r = f.do("POST", "/api/v1/auth/login", "", bad).wantError(429, "too_many_login_attempts")
		if secs, _ := r.json["metadata"].(map[string]any)["retry_after_seconds"].(float64); secs < 1 || r.header.Get("Retry-After") == "" {
			t.Errorf("429 lacks retry_after_seconds or Retry-After: %s %v", r.body, r.header)
		}
	})
}

func TestSessionCookie(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		r := f.do("POST", "/api/v1/auth/login", "", map[string]any{"username": "admin", "password": "admin-password"}).want(200)
		cookie := r.header.Get("Set-Cookie")
		for _, want := range []string{SessionCookie + "=cfr_s_", "HttpOnly", "SameSite=Lax", "Path=/"} {
			if !strings.Contains(cookie, want) {
				t.Errorf("Set-Cookie %q lacks %q", cookie, want)
			}
		}
		if r.header.Get("Cache-Control") != "no-store" || r.json["token_type"] != "bearer" || r.json["expires_at"] == nil {
			t.Errorf("login response: %v %s", r.header, r.body)
		}
		value := strings.TrimPrefix(strings.Split(cookie, ";")[0], SessionCookie+"=")
		f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+value).want(200)
		// A cross-site state change with the cookie is refused.
		f.do("POST", "/api/v1/auth/logout", "", nil, "Cookie", SessionCookie+"="+value,
			"Sec-Fetch-Site", "cross-site").wantError(403, "cross_origin_request")
		out := f.do("POST", "/api/v1/auth/logout", "", nil, "Cookie", SessionCookie+"="+value, "Sec-Fetch-Site", "same-origin").want(200)
		if out.json["success"] != true || !strings.Contains(out.header.Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("logout: %s %v", out.body, out.header)
		}
		f.do("GET", "/api/v1/auth/me", "", nil, "Cookie", SessionCookie+"="+value).wantError(401, "invalid_token")
	})
}

func TestUsersAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		created := f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "zed", "password": "zed-password", "role": "viewer"}).want(201)
		u := created.json["user"].(map[string]any)
		id := u["id"].(string)
		if u["last_login_at"] != nil || u["disabled"] != false {
			t.Errorf("created user = %s", created.body)
		}
		f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "ZED", "password": "zed-password", "role": "viewer"}).
			wantError(409, "username_taken")

		list := f.do("GET", "/api/v1/users?page=1&page_size=2", "admin", nil).want(200)
		p := list.json["pagination"].(map[string]any)
		if len(list.json["items"].([]any)) != 2 || p["total"] != 4.0 || p["total_pages"] != 2.0 || p["has_next_page"] != true ||
			p["has_prev_page"] != false || p["pagination_mode"] != "offset" || p["cursor"] != nil || p["page_size"] != 2.0 {
			t.Errorf("page 1 = %s", list.body)
		}
		list = f.do("GET", "/api/v1/users?role=viewer", "admin", nil).want(200)
		if len(list.json["items"].([]any)) != 2 {
			t.Errorf("viewers = %s", list.body)
		}
		f.do("GET", "/api/v1/users?role=root", "admin", nil).wantError(400, "invalid_request")
		f.do("GET", "/api/v1/users?page_size=100000", "admin", nil).wantError(400, "invalid_request")
		f.do("GET", "/api/v1/users?colour=blue", "admin", nil).wantError(400, "invalid_request")

		r := f.do("PATCH", "/api/v1/users/"+id, "admin", map[string]any{"role": "operator", "disabled": true}).want(200)
		if u := r.json["user"].(map[string]any); u["role"] != "operator" || u["disabled"] != true {
			t.Errorf("patched = %s", r.body)
		}
		f.do("GET", "/api/v1/users/nope", "admin", nil).wantError(404, "user_not_found")
		adminID := f.userID("admin")
		f.do("PATCH", "/api/v1/users/"+adminID, "admin", map[string]any{"disabled": true}).wantError(409, "cannot_disable_self")
		f.do("DELETE", "/api/v1/users/"+adminID, "admin", nil).wantError(409, "cannot_delete_self")
		del := f.do("DELETE", "/api/v1/users/"+id, "admin", nil).want(200)
		if del.json["success"] != true || del.json["id"] != id || del.json["message"] == "" {
			t.Errorf("delete = %s", del.body)
		}

		// Passwords: own with the old one, others' only as admin.
		viewerID := f.userID("viewer")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "viewer", map[string]any{"new_password": "brand-new-pw"}).
			wantError(400, "invalid_old_password")
		f.do("PUT", "/api/v1/users/"+adminID+"/password", "viewer", map[string]any{"new_password": "brand-new-pw"}).
			wantError(403, "forbidden")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "viewer",
			map[string]any{"old_password": "viewer-password", "new_password": "brand-new-pw"}).want(200)
		f.login("viewer", "brand-new-pw")
		f.do("PUT", "/api/v1/users/"+viewerID+"/password", "admin", map[string]any{"new_password": "admin-set-pw"}).want(200)
		f.login("viewer", "admin-set-pw")
	})
}

func TestValidationErrors(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		fieldsOf := func(r *response) []string {
			var out []string
			for _, fe := range r.json["metadata"].(map[string]any)["fields"].([]any) {
				out = append(out, fe.(map[string]any)["location"].(string))
			}
			return out
		}
		// Unknown field.
		r := f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "a", "password": "long-enough",
			"role": "viewer", "is_admin": true}).wantError(400, "invalid_request")
		if !slices.Contains(fieldsOf(r), "body.is_admin") {
			t.Errorf("unknown field not named: %s", r.body)
		}
		// Wrong type.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": 42, "password": "long-enough", "role": "viewer"}).
			wantError(400, "invalid_request")
		if !slices.Contains(fieldsOf(r), "body.username") {
			t.Errorf("wrong type not named: %s", r.body)
		}
		// Invalid value, missing field.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "a", "role": "root"}).wantError(400, "invalid_request")
		if fs := fieldsOf(r); !slices.Contains(fs, "body.role") || !slices.Contains(fs, "body.password") {
			t.Errorf("fields = %v", fs)
		}
		// Malformed JSON and a body that is too large.
		f.do("POST", "/api/v1/users", "admin", `{"username": `).wantError(400, "invalid_request")
		big := `{"username":"` + strings.Repeat("a", 2<<20) + `"}`
		r = f.do("POST", "/api/v1/users", "admin", big).wantError(413, "request_too_large")
		if r.json["metadata"].(map[string]any)["limit_bytes"] != float64(1<<20) {
			t.Errorf("413 metadata = %s", r.body)
		}
		// Domain validation from the service layer carries the field too.
		r = f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "bad name", "password": "long-enough", "role": "viewer"}).
			wantError(400, "invalid_username")
		if r.json["metadata"].(map[string]any)["field"] != "username" {
			t.Errorf("metadata = %s", r.body)
		}
	})
}

func TestRoutingErrorsAndRequestIDs(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	f.do("GET", "/api/v1/nope", "admin", nil).wantError(404, "route_not_found")
	f.do("GET", "/", "", nil).wantError(404, "route_not_found")
	r := f.do("DELETE", "/api/v1/auth/me", "admin", nil).wantError(405, "method_not_allowed")
	if !strings.Contains(r.header.Get("Allow"), "GET") {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
	// A sane request id is echoed; an insane one is replaced.
	r = f.do("GET", "/api/v1/nope", "", nil, "X-Request-Id", "trace-abc.123").wantError(404, "route_not_found")
	if r.header.Get("X-Request-Id") != "trace-abc.123" {
		t.Errorf("X-Request-Id = %q", r.header.Get("X-Request-Id"))
	}
	r = f.do("GET", "/healthz", "", nil, "X-Request-Id", "bad id with spaces").want(200)
	if id := r.header.Get("X-Request-Id"); id == "" || strings.Contains(id, " ") {
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
		r := f.do("GET", path, "", nil).wantError(500, "internal_error")
		if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "hunter2") {
			t.Errorf("%s leaks internals: %s", path, r.body)
		}
	}
}

func TestReadinessAndHealth(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	r := f.do("GET", "/readyz", "", nil).want(200)
	if r.json["status"] != "ready" || r.json["failed_count"] != 0.0 {
		t.Errorf("ready = %s", r.body)
	}
	f.ready.err = errors.New("database unreachable")
	r = f.do("GET", "/readyz", "", nil).wantError(503, "not_ready")
	check := r.json["checks"].([]any)[0].(map[string]any)
	if r.json["status"] != "not_ready" || r.json["failed_count"] != 1.0 || check["name"] != "switch" ||
		check["healthy"] != false || check["message"] != "database unreachable" {
		t.Errorf("not ready = %s", r.body)
	}
	f.do("GET", "/healthz", "", nil).want(200)
	h := f.do("GET", "/api/v1/health", "viewer", nil).want(200)
	if h.json["status"] != "ok" || h.json["version"] != "test" {
		t.Errorf("health = %s", h.body)
	}
	m := f.do("GET", "/metrics", "viewer", nil).want(200)
	for _, want := range []string{"coffer_http_request_duration_seconds_bucket", `route="GET /readyz"`, `status_class="5xx"`,
		"coffer_http_requests_in_flight"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	v := f.do("GET", "/api", "", nil).want(200)
	if !strings.Contains(string(v.body), `"id":"v1"`) {
		t.Errorf("/api = %s", v.body)
	}
}

// TestOpenAPIMatchesRoutes holds the document and the mux against each
// other: every registered route is documented, every documented route is
// served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	doc := f.do("GET", "/api/v1/openapi.json", "", nil).want(200)
	if doc.json["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %v", doc.json["openapi"])
	}
	var documented []string
	for path, item := range doc.json["paths"].(map[string]any) {
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
		if code, _ := r.json["code"].(string); code == "route_not_found" || code == "method_not_allowed" {
			t.Errorf("documented %s is not served: %s", op, r.body)
		}
	}
	// The error schema is Coffer's envelope, not problem+json.
	if strings.Contains(string(doc.body), "problem+json") {
		t.Error("document mentions problem+json")
	}
	schemas := doc.json["components"].(map[string]any)["schemas"].(map[string]any)
	props := schemas["APIError"].(map[string]any)["properties"].(map[string]any)
	for _, k := range []string{"code", "detail", "metadata", "correlation_id"} {
		if props[k] == nil {
			t.Errorf("APIError schema lacks %s", k)
		}
	}
}

// TestAuthorizationMatrix checks every documented route against every role:
// a role lacking the route's permission gets 403, one holding it never does,
// and only the routes meant to be public answer without a credential.
func TestAuthorizationMatrix(t *testing.T) {
	f := newFixture(t, metadbtest.Open(t, metadb.SQLite))
	doc := f.api.OpenAPI()
	wantPublic := []string{"GET /api", "GET /api/v1/openapi.json", "GET /healthz", "GET /readyz", "POST /api/v1/auth/login"}
	var public []string
	holds := map[string][]string{"viewer": {"read"}, "operator": {"read", "operate"}, "admin": {"read", "operate", "manage"}}
	// API tokens, so that calling logout does not end the role's credential.
	for role := range holds {
		r := f.do("POST", "/api/v1/tokens", role, map[string]any{"name": "matrix"}).want(201)
		f.tokens[role] = r.json["secret"].(string)
	}
	for path, item := range doc.Paths {
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put,
			"PATCH": item.Patch, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			name := method + " " + path
			url := strings.ReplaceAll(path, "{id}", "x")
			perm, _ := op.Extensions["x-coffer-permission"].(string)
			if perm == "" {
				public = append(public, name)
				continue
			}
			f.do(method, url, "", nil).wantError(401, "authentication_required")
			if name == "GET /api/v1/events" {
				continue // a stream: its access is tested in the events tests
			}
			for role, perms := range holds {
				r := f.do(method, url, role, map[string]any{})
				got := r.status == 403 && r.json["code"] == "forbidden" && r.json["metadata"].(map[string]any)["required_permission"] != nil
				if want := !slices.Contains(perms, perm); got != want {
					t.Errorf("%s as %s: status %d (%s), want forbidden=%v", name, role, r.status, r.body, want)
				}
			}
		}
	}
	sort.Strings(public)
	if !slices.Equal(public, wantPublic) {
		t.Errorf("public routes = %v, want %v", public, wantPublic)
	}
}
