// Package apitest holds assertions about the API contract for tests that
// talk to a Coffer server, in process or over the network.
package apitest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
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

// Reply is a decoded HTTP response.
type Reply struct {
	T      testing.TB
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any // the body, when it is a JSON object
}

// Want fails the test unless the status is status.
func (r *Reply) Want(status int) *Reply {
	r.T.Helper()
	if r.Status != status {
		r.T.Fatalf("status = %d, want %d; body: %s", r.Status, status, r.Body)
	}
	return r
}

// WantError fails the test unless the response is the error envelope with
// the given status and code (see CheckError).
func (r *Reply) WantError(status int, code string) *Reply {
	r.T.Helper()
	CheckError(r.T, r.Status, r.Header, r.Body, status, code)
	return r
}

// Str returns the string at a path of object keys in the JSON body, or "".
func (r *Reply) Str(path ...string) string {
	var v any = r.JSON
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

// Do sends a request and decodes the reply. body is nil, a string sent as
// is, or a value sent as JSON; token, when not empty, is sent as the bearer
// credential; headers are name, value pairs.
func Do(t testing.TB, client *http.Client, method, url, token string, body any, headers ...string) *Reply {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	r := &Reply{T: t, Status: resp.StatusCode, Header: resp.Header, Body: data}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &r.JSON); err != nil {
			t.Fatalf("%s %s: invalid JSON (%v): %s", method, url, err, data)
		}
	}
	return r
}
