// Package repository stores blobs in packs on a blobstore.Backend and keeps
// the repository's config: its id, format version, chunker parameters, and
// its keys wrapped with the server's master key. See
// docs/repository-format.md.
package repository
