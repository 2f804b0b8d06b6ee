// Package backups runs the server side of backups: their records and
// lifecycle, and the ingest of an agent's blobs into the repository.
package backups

// Service implements backups.
type Service struct{}
