// Package tree encodes the metadata of a backup: directories (trees) and
// snapshot manifests. It is pure encoding — the repository stores a tree as
// a blob of type tree and seals a manifest — and it is strict: Decode and
// UnmarshalSnapshot read untrusted bytes, refuse anything that is not the
// canonical form, and never panic.
//
// # Trees
//
// A directory is one tree blob listing its entries (nodes), sorted
// bytewise by name. A directory whose encoding would exceed blob.MaxSize is
// split (Split) into several part trees, and the directory's own tree lists
// those parts instead of nodes; the nodes of the parts, concatenated in
// order, are the directory's entries (Join).
//
// Encoding, version 1 (see docs/repository-format.md):
//
//	tree    = version:u8 (1) ‖ kind:u8 ‖ body
//	body    = count:uv ‖ node*                          kind 1, nodes
//	        | count:uv ‖ id*                            kind 2, parts (count ≥ 1)
//	node    = name:str ‖ type:u8 ‖ mode:uv ‖ uid:uv ‖ gid:uv ‖ user:str ‖ group:str ‖
//	          mtime_sec:sv ‖ mtime_nsec:uv ‖ payload ‖ xattr_count:uv ‖ xattr*
//	payload = size:uv ‖ links:uv ‖ [inode:uv ‖ device_id:uv] ‖ count:uv ‖ id*
//	                                                    file (inode and device_id iff links ≥ 2)
//	        | subtree:id                                dir
//	        | target:str                                symlink
//	        | rdev:uv                                   char device, block device
//	        | (nothing)                                 fifo, socket
//	xattr   = name:str ‖ value:str
//	str     = length:uv ‖ byte*
//	id      = 32 bytes (a blob id)
//
// uv is an unsigned LEB128 varint (encoding/binary.AppendUvarint) in its
// shortest form; sv is a signed zig-zag varint (binary.AppendVarint), also
// shortest. Node types are file 1, dir 2, symlink 3, char device 4, block
// device 5, fifo 6, socket 7. Each field appears exactly once and only for
// the types that have it, so a Tree has one encoding and Decode(b) succeeds
// only if Encode gives back b. Version 1 further requires:
//
//   - names are 1 to 4095 bytes, not "." or "..", without '/' or NUL (any
//     other byte, including newlines and invalid UTF-8, is kept as is), and
//     strictly increasing bytewise — so no two entries share a name;
//   - mode holds only the permission, setuid, setgid and sticky bits (07777,
//     the st_mode layout); uid and gid fit in 32 bits; 0 ≤ mtime_nsec < 10⁹;
//   - a file has no content exactly when its size is 0, and its count of
//     ids n satisfies n ≤ size ≤ n × blob.MaxSize (chunks are 1 byte to
//     16 MiB); links is 0 (not a hard link) or at least 2; no id is zero;
//   - a symlink target is 1 to 4095 bytes without NUL (it may be absolute or
//     contain "..": a restore creates it as is and must never write through
//     it);
//   - xattr names are 1 to 255 bytes without NUL, strictly increasing;
//   - the whole encoding is at most blob.MaxSize bytes.
//
// # Snapshot manifests
//
// A snapshot manifest is a JSON object (see Snapshot and Marshal), written
// by Coffer in a fixed field order, read strictly: unknown fields, another
// version, a zero tree id or a missing or non-UTC time are refused.
package tree
