package httpapi

import (
	"strings"
	"testing"

	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
)

// A User-Agent is client-controlled bytes: neither invalid UTF-8 nor a
// multibyte character cut by the length limit may break a login.
func TestLoginWithHostileUserAgent(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newFixture(t, db)
		creds := map[string]any{"username": "viewer", "password": "viewer-password"}
		for _, ua := range []string{"agent \xff\xfe/1.0", strings.Repeat("a", 255) + "é-suffix", strings.Repeat("日本", 200)} {
			f.do("POST", "/api/v1/auth/login", "", creds, "User-Agent", ua).Want(200)
		}
	})
}
