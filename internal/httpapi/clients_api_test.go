package httpapi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/apiclient"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/cofferhq/coffer/internal/protocol"
	"github.com/cofferhq/coffer/internal/server/agents"
)

// stranger adds an operator who owns no client and returns their id.
func (f *agentFixture) stranger() string {
	f.t.Helper()
	r := f.do("POST", "/api/v1/users", "admin", map[string]any{"username": "stranger", "password": "stranger-password",
		"role": "operator"}).Want(201)
	f.tokens["stranger"] = f.login("stranger", "stranger-password")
	return r.Str("user", "id")
}

// lastEvent returns the newest stored event with the given code.
func lastEvent(t *testing.T, db *metadb.DB, code string) coffer.Event {
	t.Helper()
	evs, err := db.ListEvents(context.Background(), metadb.EventQuery{Descending: true, Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Code == code {
			return e
		}
	}
	t.Fatalf("no %s event among %d", code, len(evs))
	return coffer.Event{}
}

func TestClientsAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		strangerID := f.stranger()
		operatorID := f.userID("operator")
		web, _ := f.enroll("web")
		dbID, _ := f.enroll("db")

		// Detail: the machine, its status and its owner.
		c := f.do("GET", "/api/v1/clients/"+web, "stranger", nil).Want(200).JSON["client"].(map[string]any)
		for k, want := range map[string]any{"hostname": "web-1", "os": "linux", "arch": "amd64", "agent_version": "1.2.3",
			"status": "online", "owner_id": operatorID, "owner_username": "operator"} {
			if c[k] != want {
				t.Errorf("client %s = %v, want %v", k, c[k], want)
			}
		}
		if c["last_seen_at"] == nil || len(c["ipv4"].([]any)) != 1 || len(c["ipv6"].([]any)) != 1 {
			t.Errorf("client = %v", c)
		}

		// Rename: the owner (and admins); not another operator, not a viewer.
		f.do("PATCH", "/api/v1/clients/"+web, "viewer", map[string]any{"name": "x"}).WantError(403, "forbidden")
		f.do("PATCH", "/api/v1/clients/"+web, "stranger", map[string]any{"name": "x"}).WantError(403, "client_not_owned")
		r := f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"name": "Web Front"}).Want(200)
		if r.Str("client", "name") != "Web Front" || r.Str("client", "owner_username") != "operator" {
			t.Errorf("renamed = %s", r.Body)
		}
		if e := lastEvent(t, db, "client.renamed"); e.ActorID != operatorID || e.Actor != "operator" || e.Resource.ID != web {
			t.Errorf("rename event = %+v", e)
		}
		f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"name": ""}).WantError(400, "invalid_request")
		f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"name": "a\nb"}).WantError(400, "invalid_name")
		f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"colour": "blue"}).WantError(400, "invalid_request")
		f.do("PATCH", "/api/v1/clients/nope", "admin", map[string]any{"name": "x"}).WantError(404, "client_not_found")

		// Owner: admins only; an existing user; "" clears it.
		f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"owner_id": strangerID}).
			WantError(403, "owner_change_needs_admin")
		r = f.do("PATCH", "/api/v1/clients/"+web, "admin", map[string]any{"owner_id": "01NOSUCHUSER"}).WantError(404, "user_not_found")
		if r.JSON["metadata"].(map[string]any)["field"] != "owner_id" {
			t.Errorf("unknown owner = %s", r.Body)
		}
		r = f.do("PATCH", "/api/v1/clients/"+web, "admin", map[string]any{"owner_id": strangerID}).Want(200)
		if r.Str("client", "owner_id") != strangerID || r.Str("client", "owner_username") != "stranger" {
			t.Errorf("new owner = %s", r.Body)
		}
		if e := lastEvent(t, db, "client.owner_changed"); e.Actor != "admin" || !strings.Contains(e.Message, "stranger") {
			t.Errorf("owner event = %+v", e)
		}
		// The new owner renames it; the old one no longer may.
		f.do("PATCH", "/api/v1/clients/"+web, "stranger", map[string]any{"name": "web"}).Want(200)
		f.do("PATCH", "/api/v1/clients/"+web, "operator", map[string]any{"name": "mine"}).WantError(403, "client_not_owned")

		// The list filters by status, name (any case) and owner.
		for query, want := range map[string][]string{
			"":                        {dbID, web},
			"?name=WE":                {web},
			"?owner_id=" + strangerID: {web},
			"?owner_id=" + operatorID: {dbID},
			"?status=online&name=d":   {dbID},
			"?status=offline":         {},
			"?page=2&page_size=1":     {web},
			"?name=web&owner_id=nope": {},
			"?owner_id=" + operatorID + "&status=online": {dbID},
		} {
			r := f.do("GET", "/api/v1/clients"+query, "viewer", nil).Want(200)
			var got []string
			for _, it := range r.JSON["items"].([]any) {
				got = append(got, it.(map[string]any)["id"].(string))
			}
			if fmt.Sprint(got) != fmt.Sprint(want) && !(len(got) == 0 && len(want) == 0) {
				t.Errorf("GET /clients%s = %v, want %v", query, got, want)
			}
		}
		f.do("GET", "/api/v1/clients?status=asleep", "viewer", nil).WantError(400, "invalid_request")

		r = f.do("PATCH", "/api/v1/clients/"+web, "admin", map[string]any{"owner_id": ""}).Want(200)
		if r.Str("client", "owner_id") != "" || r.Str("client", "owner_username") != "" {
			t.Errorf("cleared owner = %s", r.Body)
		}
		f.do("PATCH", "/api/v1/clients/"+web, "stranger", map[string]any{"name": "x"}).WantError(403, "client_not_owned")

		// Delete: admins only; the client's backups stay.
		b := &coffer.Backup{ClientID: web, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}}
		if err := db.CreateBackup(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		f.do("DELETE", "/api/v1/clients/"+dbID, "operator", nil).WantError(403, "forbidden")
		f.do("DELETE", "/api/v1/clients/"+web, "admin", nil).Want(200)
		f.do("DELETE", "/api/v1/clients/"+web, "admin", nil).WantError(404, "client_not_found")
		if got, err := db.GetBackup(context.Background(), b.ID); err != nil || got.ClientID != web {
			t.Errorf("the deleted client's backup = %+v, %v", got, err)
		}
	})
}

// shipLines posts lines as the agent with credential and returns the reply.
func (f *agentFixture) shipLines(credential string, lines ...map[string]any) map[string]any {
	f.t.Helper()
	return f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": lines}).Want(200).JSON
}

func logMessages(r map[string]any) []string {
	var out []string
	for _, it := range r["items"].([]any) {
		out = append(out, it.(map[string]any)["message"].(string))
	}
	return out
}

func TestClientLogsAPI(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		f := newAgentFixture(t, db, agents.Options{})
		f.stranger()
		ctx := context.Background()
		web, credential := f.enroll("web")
		other, otherCredential := f.enroll("other")
		mine := &coffer.Backup{ClientID: web, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}}
		theirs := &coffer.Backup{ClientID: other, Trigger: coffer.TriggerManual, Paths: []string{"/etc"}}
		for _, b := range []*coffer.Backup{mine, theirs} {
			if err := db.CreateBackup(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		restore := &coffer.Restore{BackupID: mine.ID, SourceClientID: web, TargetClientID: web, Destination: "/r"}
		if err := db.CreateRestore(ctx, restore); err != nil {
			t.Fatal(err)
		}

		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		at := func(s int) string { return t0.Add(time.Duration(s) * time.Second).Format(time.RFC3339Nano) }
		res := f.shipLines(credential,
			map[string]any{"time": at(0), "level": "info", "message": "backup started", "backup_id": mine.ID},
			map[string]any{"time": at(1), "level": "warn", "message": "cannot read /etc/shadow", "backup_id": mine.ID,
				"attrs": map[string]any{"path": "/etc/shadow", "err": "permission denied"}},
			map[string]any{"time": at(2), "level": "debug", "message": "chunk details", "backup_id": mine.ID},
			map[string]any{"time": at(3), "level": "error", "message": "restore failed", "restore_id": restore.ID},
			map[string]any{"time": at(4), "level": "info", "message": "spoofed", "backup_id": theirs.ID},
		)
		if res["accepted"] != 5.0 || res["detached"] != 1.0 || res["success"] != true {
			t.Fatalf("ship = %v", res)
		}
		f.shipLines(otherCredential, map[string]any{"time": at(5), "level": "error", "message": "other client"})

		// Every role reads every client's logs (no ownership for reads).
		base := "/api/v1/clients/" + web + "/logs"
		for _, role := range []string{"viewer", "operator", "stranger", "admin"} {
			r := f.do("GET", base, role, nil).Want(200)
			if got := logMessages(r.JSON); fmt.Sprint(got) != fmt.Sprint([]string{"spoofed", "restore failed", "chunk details",
				"cannot read /etc/shadow", "backup started"}) {
				t.Fatalf("%s reads %v", role, got)
			}
		}
		r := f.do("GET", base+"?page_size=1", "viewer", nil).Want(200)
		line := r.JSON["items"].([]any)[0].(map[string]any)
		if line["backup_id"] != "" || line["restore_id"] != "" || line["level"] != "info" || line["time"] != at(4) ||
			line["received_at"] == nil || line["id"] == "" || line["attrs"] == nil {
			t.Errorf("detached line = %v", line)
		}

		// Cursor pagination, newest first, to the end.
		var pages [][]string
		cursor := ""
		for i := 0; i < 5; i++ {
			q := base + "?page_size=2"
			if cursor != "" {
				q += "&cursor=" + cursor
			}
			r := f.do("GET", q, "viewer", nil).Want(200)
			p := r.JSON["pagination"].(map[string]any)
			if p["pagination_mode"] != "cursor" || p["total"] != -1.0 || p["total_pages"] != -1.0 {
				t.Fatalf("pagination = %v", p)
			}
			pages = append(pages, logMessages(r.JSON))
			next, _ := p["cursor"].(string)
			if (next != "") != (p["has_next_page"] == true) {
				t.Fatalf("cursor %q with has_next_page %v", next, p["has_next_page"])
			}
			if next == "" {
				break
			}
			cursor = next
		}
		if fmt.Sprint(pages) != "[[spoofed restore failed] [chunk details cannot read /etc/shadow] [backup started]]" {
			t.Errorf("pages = %v", pages)
		}

		// Filters.
		for query, want := range map[string]string{
			"?level=warn":                         "[restore failed cannot read /etc/shadow]",
			"?level=debug&backup_id=" + mine.ID:   "[chunk details cannot read /etc/shadow backup started]",
			"?level=info&backup_id=" + mine.ID:    "[cannot read /etc/shadow backup started]",
			"?backup_id=" + theirs.ID:             "[]",
			"?restore_id=" + restore.ID:           "[restore failed]",
			"?since=" + at(1) + "&until=" + at(3): "[chunk details cannot read /etc/shadow]",
		} {
			r := f.do("GET", base+strings.ReplaceAll(query, "+", "%2B"), "viewer", nil).Want(200)
			if got := fmt.Sprint(logMessages(r.JSON)); got != want && !(want == "[]" && got == "[]") {
				t.Errorf("%s = %s, want %s", query, got, want)
			}
		}
		r = f.do("GET", base+"?backup_id="+mine.ID+"&level=warn", "viewer", nil).Want(200)
		if a := r.JSON["items"].([]any)[0].(map[string]any)["attrs"].(map[string]any); a["path"] != "/etc/shadow" {
			t.Errorf("attrs = %v", a)
		}

		// Bad input.
		f.do("GET", base+"?cursor=garbage!", "viewer", nil).WantError(400, "invalid_cursor")
		f.do("GET", base+"?cursor=e30", "viewer", nil).Want(200) // "{}": a valid, empty position
		f.do("GET", base+"?level=loud", "viewer", nil).WantError(400, "invalid_request")
		f.do("GET", base+"?since="+at(3)+"&until="+at(1), "viewer", nil).WantError(400, "invalid_time_range")
		f.do("GET", base+"?since=yesterday", "viewer", nil).WantError(400, "invalid_request")
		f.do("GET", "/api/v1/clients/nope/logs", "viewer", nil).WantError(404, "client_not_found")
		f.do("GET", base, credential, nil).WantError(403, "forbidden")
		f.do("POST", "/api/v1/agent/logs", "admin", map[string]any{"lines": []any{map[string]any{"level": "info", "message": "x"}}}).
			WantError(403, "forbidden")
		tooMany := make([]map[string]any, protocol.MaxLogLines+1)
		for i := range tooMany {
			tooMany[i] = map[string]any{"level": "info", "message": "x"}
		}
		f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": tooMany}).WantError(400, "invalid_request")
		f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": []any{}}).WantError(400, "invalid_request")
		f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": []any{map[string]any{"level": "loud", "message": "x"}}}).
			WantError(400, "invalid_request")
		f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": []any{
			map[string]any{"level": "info", "message": strings.Repeat("m", protocol.MaxLogMessage+1)}}}).WantError(400, "invalid_request")
		r = f.do("POST", "/api/v1/agent/logs", credential, map[string]any{"lines": []any{
			map[string]any{"level": "info", "message": "x"},
			map[string]any{"level": "info", "message": "y", "attrs": map[string]any{"k": strings.Repeat("v", 300)}}}}).
			WantError(400, "invalid_log_line")
		if r.JSON["metadata"].(map[string]any)["field"] != "body.lines[1].attrs" {
			t.Errorf("bad attr = %s", r.Body)
		}
		huge := `{"lines":[{"level":"info","message":"` + strings.Repeat("a", maxLogBatchBytes) + `"}]}`
		f.do("POST", "/api/v1/agent/logs", credential, huge).WantError(413, "request_too_large")
		if n := len(logMessages(f.do("GET", base+"?page_size=100", "viewer", nil).Want(200).JSON)); n != 5 {
			t.Errorf("refused batches stored lines: %d lines", n)
		}
	})
}

// The agent's client ships lines the server lists.
func TestShipLogsInterop(t *testing.T) {
	f := newAgentFixture(t, metadbtest.Open(t, metadb.SQLite), agents.Options{})
	id, credential := f.enroll("interop")
	c, err := apiclient.New(apiclient.Options{Server: f.ts.URL, Credential: credential})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ShipLogs(context.Background(), protocol.LogBatch{Lines: []protocol.LogLine{
		{Time: time.Now(), Level: "warn", Message: "disk almost full", Attrs: map[string]string{"free": "2%"}}}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("ship = %+v, %v", res, err)
	}
	_, err = c.ShipLogs(context.Background(), protocol.LogBatch{Lines: []protocol.LogLine{{Level: "shout"}}})
	if !apiclient.IsStatus(err, 400) {
		t.Errorf("bad batch: %v", err)
	}
	r := f.do("GET", "/api/v1/clients/"+id+"/logs", "viewer", nil).Want(200)
	if got := logMessages(r.JSON); len(got) != 1 || got[0] != "disk almost full" {
		t.Errorf("lines = %v", got)
	}
}
