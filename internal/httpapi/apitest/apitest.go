// Package apitest holds assertions about the API contract for tests that
// talk to a Coffer server, in process or over the network.
package apitest

import (
	"encoding/json"
	"net/http"
	"testing"
)

// CheckError fails t unless the response is Coffer's error envelope with the
// wanted status and code: all four fields present, and correlation_id equal
// to the X-Request-Id header. It returns the decoded body.
func CheckError(t testing.TB, status int, header http.Header, body []byte, wantStatus int, wantCode string) map[string]any {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("status = %d, want %d; body: %s", status, wantStatus, body)
	}
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("error body is not JSON (%v): %s", err, body)
	}
	for _, k := range []string{"code", "detail", "metadata", "correlation_id"} {
		if _, ok := env[k]; !ok {
			t.Fatalf("error envelope lacks %q: %s", k, body)
		}
	}
	if env["code"] != wantCode {
		t.Fatalf("code = %v, want %s; body: %s", env["code"], wantCode, body)
	}
	if id := header.Get("X-Request-Id"); id == "" || env["correlation_id"] != id {
		t.Fatalf("correlation_id %v does not match X-Request-Id %q", env["correlation_id"], id)
	}
	return env
}
