package tree

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cofferhq/coffer/internal/engine/blob"
)

// SnapshotVersion is the manifest version this package writes and reads.
const SnapshotVersion = 1

// Snapshot is the manifest of one successful backup. Its JSON form is an
// object with the fields below in this order, "tree" as 64 lowercase hex
// digits and "time" in RFC 3339 in UTC with nanoseconds.
type Snapshot struct {
	Version  int       `json:"-"` // "version": SnapshotVersion
	Time     time.Time `json:"-"` // "time": when the backup started
	Tree     blob.ID   `json:"-"` // "tree": the root tree
	Hostname string    `json:"hostname"`
	Paths    []string  `json:"paths"` // what was backed up
	Tags     []string  `json:"tags,omitempty"`
	ClientID string    `json:"client_id,omitempty"`
	PlanID   string    `json:"plan_id,omitempty"`
	BackupID string    `json:"backup_id,omitempty"`
	// Parent is the id of the snapshot this backup was based on (whose
	// files it did not re-read when unchanged), if any.
	Parent string        `json:"parent,omitempty"`
	Stats  SnapshotStats `json:"stats"`
}

// SnapshotStats summarizes a backup. Blob counts and AddedBytes cover what
// this backup added to the repository, not what it references.
type SnapshotStats struct {
	Files      uint64 `json:"files"`
	Dirs       uint64 `json:"dirs"`
	Symlinks   uint64 `json:"symlinks"`
	Others     uint64 `json:"others"`      // devices, fifos, sockets
	Bytes      uint64 `json:"bytes"`       // the files' total size
	DataBlobs  uint64 `json:"data_blobs"`  // new data blobs
	TreeBlobs  uint64 `json:"tree_blobs"`  // new tree blobs
	AddedBytes uint64 `json:"added_bytes"` // stored (compressed, encrypted) bytes of the new blobs
}

// Validate reports why s is not a manifest Marshal may write, or nil.
func (s *Snapshot) Validate() error {
	switch {
	case s.Version != SnapshotVersion:
		return fmt.Errorf("version %d is not supported (this Coffer knows version %d)", s.Version, SnapshotVersion)
	case s.Tree.IsZero():
		return errors.New("no tree")
	case s.Time.IsZero():
		return errors.New("no time")
	}
	return nil
}

// Marshal returns the manifest's JSON. The same snapshot always gives the
// same bytes.
func (s *Snapshot) Marshal() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("marshal snapshot: %w", err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("marshal snapshot: %w", err)
	}
	return b, nil
}

// UnmarshalSnapshot parses and validates a manifest. It refuses unknown
// fields, another version, a zero tree and a time that is missing or not in
// UTC; errors match ErrCorrupt.
func UnmarshalSnapshot(b []byte) (*Snapshot, error) {
	// Read the version alone first, so that a newer manifest is refused
	// for its version rather than for the fields it added.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("unmarshal snapshot: %w: %w", err, ErrCorrupt)
	}
	if v.Version != SnapshotVersion {
		return nil, fmt.Errorf("unmarshal snapshot: version %d is not supported (this Coffer knows version %d): %w", v.Version, SnapshotVersion, ErrCorrupt)
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("unmarshal snapshot: %w: %w", err, ErrCorrupt)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("unmarshal snapshot: %w: %w", err, ErrCorrupt)
	}
	if s.Time.Location() != time.UTC {
		return nil, fmt.Errorf("unmarshal snapshot: time %s is not in UTC: %w", s.Time.Format(time.RFC3339Nano), ErrCorrupt)
	}
	return &s, nil
}

// snapshotFields is Snapshot without its methods, for its JSON form.
type snapshotFields Snapshot

// manifest is the JSON form of a Snapshot: version, time and the tree id
// in hex, then the other fields.
type manifest struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Tree    hexID     `json:"tree"`
	snapshotFields
}

// MarshalJSON writes the manifest form of s, with Time in UTC and nil Paths
// as an empty list.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	m := manifest{Version: s.Version, Time: s.Time.UTC(), Tree: hexID(s.Tree), snapshotFields: snapshotFields(s)}
	if m.Paths == nil {
		m.Paths = []string{}
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads the manifest form, refusing unknown fields. It does
// not validate: UnmarshalSnapshot does.
func (s *Snapshot) UnmarshalJSON(b []byte) error {
	var m manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*s = Snapshot(m.snapshotFields)
	s.Version, s.Time, s.Tree = m.Version, m.Time, blob.ID(m.Tree)
	return nil
}

// hexID is a blob id in JSON: 64 lowercase hex digits.
type hexID blob.ID

func (id hexID) MarshalText() ([]byte, error) { return []byte(blob.ID(id).String()), nil }

func (id *hexID) UnmarshalText(text []byte) error {
	parsed, err := blob.ParseID(string(text))
	if err != nil {
		return err
	}
	if parsed.String() != string(text) {
		return fmt.Errorf("blob id %q: not lowercase", text)
	}
	*id = hexID(parsed)
	return nil
}
