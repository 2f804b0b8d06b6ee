// Package restores runs the server side of restores: their records and
// lifecycle, and serving a restoring agent the blobs it needs.
package restores

// Service implements restores.
type Service struct{}
