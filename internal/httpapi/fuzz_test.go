package httpapi

import (
	"encoding/json"
	"testing"

	"github.com/cofferhq/coffer/internal/httpapi/apitest"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// FuzzRequestBodies sends arbitrary bytes as JSON bodies to the routes that
// take one. Whatever arrives, the server answers below 500, and every error
// is the envelope. Run with: go test -fuzz FuzzRequestBodies ./internal/httpapi
func FuzzRequestBodies(f *testing.F) {
	seeds := []string{
		`{"username":"a","password":"long-enough","role":"viewer"}`,
		`{"username":"a","password":"long-enough","role":"viewer","x":1}`,
		`{"username":12,"password":null,"role":["admin"]}`,
		`{"username":"a\u0000b","password":"` + "\xff\xfe" + `","role":"viewer"}`,
		`{"name":"t","scopes":["read","read","manage"],"expires_at":"yesterday"}`,
		`{"name":"t","expires_at":"1970-01-01T00:00:00Z"}`,
		`{"old_password":"","new_password":"` + string(make([]byte, 2000)) + `"}`,
		`[]`, `null`, `""`, `{`, `{"a":{"b":{"c":{"d":[[[[[]]]]]}}}}`, `{"username":"` + "\u202e" + `admin"}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	fx := newFixture(f, metadbtest.Open(f, metadb.SQLite))
	routes := []struct{ method, path string }{
		{"POST", "/api/v1/users"}, {"PATCH", "/api/v1/users/" + fx.userID("viewer")},
		{"POST", "/api/v1/tokens"}, {"PUT", "/api/v1/users/" + fx.userID("operator") + "/password"},
		{"POST", "/api/v1/auth/login"},
	}
	f.Fuzz(func(t *testing.T, body string) {
		fx.t = t
		for _, rt := range routes {
			r := fx.do(rt.method, rt.path, "admin", body)
			if r.Status >= 500 {
				t.Fatalf("%s %s with %q: status %d: %s", rt.method, rt.path, body, r.Status, r.Body)
			}
			if r.Status >= 400 {
				var env map[string]any
				if json.Unmarshal(r.Body, &env) != nil || env["code"] == nil {
					t.Fatalf("%s %s with %q: not an error envelope: %s", rt.method, rt.path, body, r.Body)
				}
				apitest.CheckError(t, r.Status, r.Header, r.Body, r.Status, env["code"].(string))
			}
		}
	})
}
