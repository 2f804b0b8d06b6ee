package metadb_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/metadb/metadbtest"
	"github.com/google/go-cmp/cmp"
)

// jobClock is a settable clock shared by the store handles of a test.
type jobClock struct {
	mu sync.Mutex
	t  time.Time
}

// newJobClock starts a clock and makes it the clock of every db.
func newJobClock(dbs ...*metadb.DB) *jobClock {
	c := &jobClock{t: time.Date(2026, 3, 14, 9, 26, 53, 589793238, time.UTC)}
	for _, db := range dbs {
		db.Now = c.Now
	}
	return c
}

func (c *jobClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock on and returns the new time as the store keeps it.
func (c *jobClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t.Truncate(time.Microsecond)
}

// stored is t as the store keeps it.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// newToken stores an enrollment token created by the user, valid for an hour.
func newToken(t *testing.T, db *metadb.DB, createdBy, name, hash string) *coffer.EnrollmentToken {
	t.Helper()
	tok := &coffer.EnrollmentToken{TokenHash: hash, Name: name, CreatedBy: createdBy, ExpiresAt: db.Now().Add(time.Hour)}
	if err := db.CreateEnrollmentToken(context.Background(), tok); err != nil {
		t.Fatalf("create enrollment token: %v", err)
	}
	return tok
}

// enrollTestClient enrolls a client named name with a fresh token of owner's.
func enrollTestClient(t *testing.T, db *metadb.DB, ownerID, name string) *coffer.Client {
	t.Helper()
	newToken(t, db, ownerID, "", "tok-"+name)
	c := &coffer.Client{Name: name, Hostname: name + ".example", OS: "linux", Arch: "amd64", CredentialHash: "cred-" + name}
	if _, err := db.EnrollClient(context.Background(), "tok-"+name, c); err != nil {
		t.Fatalf("enroll %s: %v", name, err)
	}
	return c
}

func TestEnrollClient(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		alice := newUser(t, db, "alice", coffer.RoleOperator)

		tok := newToken(t, db, alice.ID, "", "hash-1")
		if got, total, err := db.ListClients(ctx, metadb.ClientFilter{}); err != nil || total != 0 || len(got) != 0 {
			t.Fatalf("clients before enrollment: %v, %d, %v", got, total, err)
		}

		now := clock.Add(time.Minute)
		c := &coffer.Client{Hostname: "web1", OS: "linux", Arch: "arm64", IPv4: []string{"10.0.0.7"},
			IPv6: []string{"fd00::7", "fe80::1"}, AgentVersion: "1.2.3", CredentialHash: "cred-1"}
		used, err := db.EnrollClient(ctx, "hash-1", c)
		if err != nil {
			t.Fatal(err)
		}
		wantTok := *tok
		wantTok.UsedAt, wantTok.ClientID = &now, c.ID
		if diff := cmp.Diff(&wantTok, used); diff != "" {
			t.Errorf("returned token (-want +got):\n%s", diff)
		}
		want := &coffer.Client{ID: c.ID, Name: "web1", Hostname: "web1", OS: "linux", Arch: "arm64",
			IPv4: []string{"10.0.0.7"}, IPv6: []string{"fd00::7", "fe80::1"}, AgentVersion: "1.2.3", OwnerID: alice.ID,
			Status: coffer.ClientOnline, LastSeenAt: &now, CreatedAt: now, UpdatedAt: now, CredentialHash: "cred-1"}
		if c.ID == "" {
			t.Fatal("EnrollClient assigned no id")
		}
		if diff := cmp.Diff(want, c); diff != "" {
			t.Errorf("enrolled client (-want +got):\n%s", diff)
		}
		got, err := db.GetClient(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("GetClient (-want +got):\n%s", diff)
		}
		byCred, err := db.ClientByCredentialHash(ctx, "cred-1")
		if err != nil || byCred.ID != c.ID {
			t.Fatalf("ClientByCredentialHash = %v, %v", byCred, err)
		}
		_, err = db.ClientByCredentialHash(ctx, "cred-unknown")
		wantCode(t, err, "client_not_found")
		_, err = db.GetClient(ctx, "nope")
		wantCode(t, err, "client_not_found")

		// A spent token, an unknown one, an expired one.
		_, err = db.EnrollClient(ctx, "hash-1", &coffer.Client{Hostname: "web2", CredentialHash: "cred-2"})
		wantCode(t, err, "enrollment_token_used")
		if !coffer.IsKind(err, coffer.KindUnauthenticated) {
			t.Errorf("a used token is %v, want unauthenticated", coffer.ErrorKind(err))
		}
		_, err = db.EnrollClient(ctx, "hash-unknown", &coffer.Client{Hostname: "web2", CredentialHash: "cred-2"})
		wantCode(t, err, "enrollment_token_invalid")
		newToken(t, db, alice.ID, "", "hash-2")
		clock.Add(time.Hour)
		_, err = db.EnrollClient(ctx, "hash-2", &coffer.Client{Hostname: "web2", CredentialHash: "cred-2"})
		wantCode(t, err, "enrollment_token_expired")
		if _, total, _ := db.ListClients(ctx, metadb.ClientFilter{}); total != 1 {
			t.Errorf("refused enrollments left %d clients, want 1", total)
		}

		// The name: the agent's, else the token's, else the hostname.
		newToken(t, db, alice.ID, "db-server", "hash-3")
		named := &coffer.Client{Hostname: "h3", CredentialHash: "cred-3"}
		if _, err := db.EnrollClient(ctx, "hash-3", named); err != nil {
			t.Fatal(err)
		}
		newToken(t, db, alice.ID, "db-server", "hash-4")
		own := &coffer.Client{Name: "mine", Hostname: "h4", CredentialHash: "cred-4"}
		if _, err := db.EnrollClient(ctx, "hash-4", own); err != nil {
			t.Fatal(err)
		}
		if named.Name != "db-server" || own.Name != "mine" {
			t.Errorf("names = %q, %q; want the token's name, then the agent's", named.Name, own.Name)
		}

		// A taken credential fails the enrollment and leaves the token unused.
		newToken(t, db, alice.ID, "", "hash-5")
		_, err = db.EnrollClient(ctx, "hash-5", &coffer.Client{Hostname: "h5", CredentialHash: "cred-1"})
		wantCode(t, err, "client_credential_taken")
		if _, err := db.EnrollClient(ctx, "hash-5", &coffer.Client{Hostname: "h5", CredentialHash: "cred-5"}); err != nil {
			t.Fatalf("the token of a failed enrollment is spent: %v", err)
		}
	})
}

func TestEnrollmentTokenOwner(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		newUser(t, db, "root", coffer.RoleAdmin)
		bob := newUser(t, db, "bob", coffer.RoleOperator)

		err := db.CreateEnrollmentToken(ctx, &coffer.EnrollmentToken{TokenHash: "x", CreatedBy: "ghost", ExpiresAt: db.Now().Add(time.Hour)})
		wantCode(t, err, "user_not_found")

		// A token without a creator enrolls an ownerless client.
		newToken(t, db, "", "", "anon")
		anon := &coffer.Client{Hostname: "anon", CredentialHash: "cred-anon"}
		if _, err := db.EnrollClient(ctx, "anon", anon); err != nil {
			t.Fatal(err)
		}
		if anon.OwnerID != "" {
			t.Errorf("owner = %q, want none", anon.OwnerID)
		}

		c := enrollTestClient(t, db, bob.ID, "bobs-laptop")
		newToken(t, db, bob.ID, "", "bob-unused")
		if _, err := db.DeleteUser(ctx, bob.ID); err != nil {
			t.Fatal(err)
		}
		// Bob's clients stay, without an owner; his tokens go.
		got, err := db.GetClient(ctx, c.ID)
		if err != nil {
			t.Fatalf("deleting the owner deleted the client: %v", err)
		}
		if got.OwnerID != "" {
			t.Errorf("owner of a deleted user's client = %q, want none", got.OwnerID)
		}
		_, err = db.EnrollClient(ctx, "bob-unused", &coffer.Client{Hostname: "x", CredentialHash: "cred-x"})
		wantCode(t, err, "enrollment_token_invalid")
	})
}

func TestEnrollClientConcurrent(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		other := metadbtest.OpenSame(t, db)
		newJobClock(db, other)
		newToken(t, db, "", "", "one-token")

		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replica := []*metadb.DB{db, other}[i%2]
				c := &coffer.Client{Hostname: fmt.Sprintf("h%d", i), CredentialHash: fmt.Sprintf("cred-%d", i)}
				_, errs[i] = replica.EnrollClient(context.Background(), "one-token", c)
			}()
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch coffer.ErrorCode(err) {
			case "":
				wins++
			case "enrollment_token_used":
			default:
				t.Errorf("enrollment failed with %v, want enrollment_token_used", err)
			}
		}
		if wins != 1 {
			t.Errorf("%d enrollments succeeded with one token, want exactly 1", wins)
		}
		if _, total, _ := db.ListClients(context.Background(), metadb.ClientFilter{}); total != 1 {
			t.Errorf("%d clients enrolled, want 1", total)
		}
	})
}

func TestListClients(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		ann := newUser(t, db, "ann", coffer.RoleOperator)
		ben := newUser(t, db, "ben", coffer.RoleOperator)
		// Inserted out of order; names sort the same in any collation.
		enrollTestClient(t, db, ben.ID, "epsilon%2")
		beta := enrollTestClient(t, db, ann.ID, "Beta")
		enrollTestClient(t, db, ann.ID, "delta_1")
		enrollTestClient(t, db, ben.ID, "alpha")
		clock.Add(time.Hour)
		if _, err := db.MarkClientsOffline(ctx, db.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := db.RecordHeartbeat(ctx, beta.ID, coffer.ClientInfo{Hostname: "beta"}); err != nil {
			t.Fatal(err)
		}

		names := func(cs []coffer.Client) []string {
			var out []string
			for _, c := range cs {
				out = append(out, c.Name)
			}
			return out
		}
		for _, tc := range []struct {
			name  string
			f     metadb.ClientFilter
			want  []string
			total int
		}{
			{"all", metadb.ClientFilter{}, []string{"alpha", "Beta", "delta_1", "epsilon%2"}, 4},
			{"page", metadb.ClientFilter{Limit: 2, Offset: 1}, []string{"Beta", "delta_1"}, 4},
			{"offset only", metadb.ClientFilter{Offset: 3}, []string{"epsilon%2"}, 4},
			{"online", metadb.ClientFilter{Status: coffer.ClientOnline}, []string{"Beta"}, 1},
			{"offline", metadb.ClientFilter{Status: coffer.ClientOffline, Limit: 1}, []string{"alpha"}, 3},
			{"name any case", metadb.ClientFilter{Name: "ET"}, []string{"Beta"}, 1},
			{"name substring", metadb.ClientFilter{Name: "l"}, []string{"alpha", "delta_1", "epsilon%2"}, 3},
			{"underscore is literal", metadb.ClientFilter{Name: "_"}, []string{"delta_1"}, 1},
			{"percent is literal", metadb.ClientFilter{Name: "%"}, []string{"epsilon%2"}, 1},
			{"owner", metadb.ClientFilter{OwnerID: ben.ID}, []string{"alpha", "epsilon%2"}, 2},
			{"owner and status", metadb.ClientFilter{OwnerID: ann.ID, Status: coffer.ClientOffline}, []string{"delta_1"}, 1},
			{"none", metadb.ClientFilter{Name: "zeta"}, nil, 0},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, total, err := db.ListClients(ctx, tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, names(got)); diff != "" || total != tc.total {
					t.Errorf("total %d, want %d; names (-want +got):\n%s", total, tc.total, diff)
				}
			})
		}
	})
}

func TestClientHeartbeatAndOffline(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		clock := newJobClock(db)
		c := enrollTestClient(t, db, "", "node")
		enrolled := clock.Now()

		// Seen recently: stays online.
		clock.Add(20 * time.Second)
		off, err := db.MarkClientsOffline(ctx, clock.Now().Add(-45*time.Second))
		if err != nil || len(off) != 0 {
			t.Fatalf("MarkClientsOffline of a fresh client = %v, %v", off, err)
		}
		wasOffline, err := db.RecordHeartbeat(ctx, c.ID, coffer.ClientInfo{Hostname: "node.example", OS: "linux", Arch: "amd64"})
		if err != nil || wasOffline {
			t.Fatalf("heartbeat of an online client = %v, %v; want not offline", wasOffline, err)
		}

		now := clock.Add(time.Minute)
		off, err = db.MarkClientsOffline(ctx, now.Add(-45*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(off) != 1 || off[0].ID != c.ID || off[0].Status != coffer.ClientOffline || !off[0].UpdatedAt.Equal(now) {
			t.Fatalf("MarkClientsOffline = %+v, want the client, offline, updated now", off)
		}
		if again, err := db.MarkClientsOffline(ctx, now); err != nil || len(again) != 0 {
			t.Fatalf("second MarkClientsOffline = %v, %v; want nothing", again, err)
		}

		now = clock.Add(time.Second)
		info := coffer.ClientInfo{Hostname: "node2", OS: "freebsd", Arch: "arm64", IPv4: []string{"192.0.2.1"},
			IPv6: []string{"2001:db8::1"}, AgentVersion: "2.0.0"}
		wasOffline, err = db.RecordHeartbeat(ctx, c.ID, info)
		if err != nil || !wasOffline {
			t.Fatalf("heartbeat after offline = %v, %v; want was offline", wasOffline, err)
		}
		got, err := db.GetClient(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := *c
		want.Hostname, want.OS, want.Arch, want.IPv4, want.IPv6, want.AgentVersion = info.Hostname, info.OS, info.Arch, info.IPv4, info.IPv6, info.AgentVersion
		want.Status, want.LastSeenAt, want.UpdatedAt, want.CreatedAt = coffer.ClientOnline, &now, now, stored(enrolled)
		if diff := cmp.Diff(&want, got); diff != "" {
			t.Errorf("client after heartbeat (-want +got):\n%s", diff)
		}
		if wasOffline, err := db.RecordHeartbeat(ctx, c.ID, info); err != nil || wasOffline {
			t.Errorf("second heartbeat = %v, %v; want online already", wasOffline, err)
		}
		_, err = db.RecordHeartbeat(ctx, "nope", info)
		wantCode(t, err, "client_not_found")
	})
}

func TestMarkClientsOfflineReplicas(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		other := metadbtest.OpenSame(t, db)
		clock := newJobClock(db, other)
		var ids []string
		for i := range 20 {
			ids = append(ids, enrollTestClient(t, db, "", fmt.Sprintf("c%02d", i)).ID)
		}
		clock.Add(time.Hour)

		// Two replicas sweep at once, twice each: every client is reported once.
		var mu sync.Mutex
		var seen []string
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				off, err := []*metadb.DB{db, other}[i%2].MarkClientsOffline(context.Background(), clock.Now())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				for _, c := range off {
					seen = append(seen, c.ID)
				}
			}()
		}
		wg.Wait()
		slices.Sort(seen)
		slices.Sort(ids)
		if diff := cmp.Diff(ids, seen); diff != "" {
			t.Errorf("clients reported offline (-want +got):\n%s", diff)
		}

		// Concurrent heartbeats of an offline client: one says it was offline.
		codes := race(6, func(i int) error {
			wasOffline, err := []*metadb.DB{db, other}[i%2].RecordHeartbeat(context.Background(), ids[0], coffer.ClientInfo{Hostname: "h"})
			if err == nil && wasOffline {
				return coffer.Errorf(coffer.KindConflict, "was_offline", "was offline")
			}
			return err
		})
		if codes["was_offline"] != 1 || codes[""] != 5 {
			t.Errorf("concurrent heartbeats after offline: %v; want exactly one was offline", codes)
		}
	})
}

func TestDeleteClientKeepsJobs(t *testing.T) {
	metadbtest.ForEach(t, func(t *testing.T, db *metadb.DB) {
		ctx := context.Background()
		newJobClock(db)
		c := enrollTestClient(t, db, "", "doomed")
		keep := enrollTestClient(t, db, "", "kept")
		b := &coffer.Backup{ClientID: c.ID, Paths: []string{"/etc"}}
		if err := db.CreateBackup(ctx, b); err != nil {
			t.Fatal(err)
		}
		r := &coffer.Restore{BackupID: b.ID, SourceClientID: c.ID, TargetClientID: c.ID}
		if err := db.CreateRestore(ctx, r); err != nil {
			t.Fatal(err)
		}
		cmd := &coffer.AgentCommand{ClientID: c.ID, Kind: "backup", Payload: []byte(`{}`)}
		if err := db.EnqueueCommand(ctx, cmd); err != nil {
			t.Fatal(err)
		}
		keptBackup := &coffer.Backup{ClientID: keep.ID, Paths: []string{"/etc"}}
		if err := db.CreateBackup(ctx, keptBackup); err != nil {
			t.Fatal(err)
		}
		keptCmd := &coffer.AgentCommand{ClientID: keep.ID, Kind: "backup"}
		if err := db.EnqueueCommand(ctx, keptCmd); err != nil {
			t.Fatal(err)
		}

		gone, err := db.DeleteClient(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c, gone); diff != "" {
			t.Errorf("DeleteClient returned (-want +got):\n%s", diff)
		}
		_, err = db.GetClient(ctx, c.ID)
		wantCode(t, err, "client_not_found")
		_, err = db.DeleteClient(ctx, c.ID)
		wantCode(t, err, "client_not_found")
		_, err = db.ClientByCredentialHash(ctx, c.CredentialHash)
		wantCode(t, err, "client_not_found")

		// Kept as history, but failed: nothing can run them any more.
		if got, err := db.GetBackup(ctx, b.ID); err != nil || got.ClientID != c.ID || got.State != coffer.JobFailed ||
			!strings.Contains(got.Error, "client was deleted") || got.FinishedAt == nil {
			t.Errorf("queued backup of a deleted client = %+v, %v; want it kept, failed", got, err)
		}
		if got, err := db.GetRestore(ctx, r.ID); err != nil || got.SourceClientID != c.ID || got.State != coffer.JobFailed ||
			!strings.Contains(got.Error, "client was deleted") {
			t.Errorf("queued restore to a deleted client = %+v, %v; want it kept, failed", got, err)
		}
		if got, err := db.GetBackup(ctx, keptBackup.ID); err != nil || got.State != coffer.JobQueued {
			t.Errorf("another client's backup = %+v, %v; want it still queued", got, err)
		}
		_, err = db.GetCommand(ctx, cmd.ID)
		wantCode(t, err, "command_not_found")
		if _, err := db.GetCommand(ctx, keptCmd.ID); err != nil {
			t.Errorf("another client's command went too: %v", err)
		}
		if list, err := db.ListBackups(ctx, metadb.BackupFilter{ClientID: c.ID}); err != nil || len(list) != 1 {
			t.Errorf("ListBackups of a deleted client = %d, %v; want 1", len(list), err)
		}
	})
}
