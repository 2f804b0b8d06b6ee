package coffer

import "time"

// EndpointType says what kind of S3-compatible server an endpoint is. It
// documents the endpoint and picks defaults (AWS wants virtual-host
// addressing); every type speaks the same S3 API.
type EndpointType string

// The endpoint types.
const (
	EndpointS3    EndpointType = "s3"    // any S3-compatible server
	EndpointCeph  EndpointType = "ceph"  // Ceph RADOS Gateway
	EndpointMinIO EndpointType = "minio" // MinIO
	EndpointAWS   EndpointType = "aws"   // Amazon S3
)

// EndpointTypes lists every endpoint type.
var EndpointTypes = []EndpointType{EndpointS3, EndpointCeph, EndpointMinIO, EndpointAWS}

// Addressing says how requests to an endpoint name the bucket.
type Addressing string

// The addressing styles.
const (
	AddressingPath    Addressing = "path"    // https://host/bucket/key: what self-hosted servers want
	AddressingVirtual Addressing = "virtual" // https://bucket.host/key: AWS's preferred style
)

// Endpoint is an S3-compatible server that repositories can live on.
// It holds no credentials: each repository has its own.
type Endpoint struct {
	ID          string
	DisplayName string
	URL         string // host[:port], without a scheme (HTTPS says which)
	HTTPS       bool
	Type        EndpointType
	Region      string // "" lets the server say
	Addressing  Addressing
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// RepositoryKind says where a repository's objects live.
type RepositoryKind string

// The repository kinds.
const (
	RepositoryLocal RepositoryKind = "local" // a directory on the server
	RepositoryS3    RepositoryKind = "s3"    // a bucket (and prefix) on an endpoint
)

// Quota warning levels: the percentages of a repository's quota whose
// crossing is announced once.
const (
	QuotaWarnLow  = 80
	QuotaWarnHigh = 95
)

// Repository is where one set of backups lives: the engine repository
// whose config id is ID, and how to reach it.
type Repository struct {
	ID   string // the engine repository's config id
	Name string
	Kind RepositoryKind
	Path string // local: the directory

	EndpointID string // s3: the endpoint
	Bucket     string
	Prefix     string // s3: key prefix ("" = the whole bucket)
	// Credentials are the S3 access key and secret sealed with the
	// server's master key: opaque to everything but the storage service,
	// and never returned by the API or logged. nil for none.
	Credentials []byte

	QuotaBytes int64 // 0 = no quota
	// QuotaLevel is the warning level reached (0, QuotaWarnLow or
	// QuotaWarnHigh), so that each crossing is announced once.
	QuotaLevel int

	// Encrypted and Chunker are read from the repository's config and
	// never change.
	Encrypted bool
	Chunker   ChunkerParams
	IsDefault bool // the repository opened at start from the server's flags

	LastVerify *MaintenanceResult
	LastGC     *MaintenanceResult
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// ChunkerParams are a repository's content-defined chunking sizes.
type ChunkerParams struct {
	Algorithm string `json:"algorithm"`
	Min       int    `json:"min"`
	Avg       int    `json:"avg"`
	Max       int    `json:"max"`
}

// RepositoryJobKind names a maintenance job on a repository.
type RepositoryJobKind string

// The repository job kinds.
const (
	JobVerify RepositoryJobKind = "verify"
	JobGC     RepositoryJobKind = "gc"
)

// RepositoryJob is one verify or garbage collection of a repository, run
// in the background by one server replica. State is running, succeeded
// or failed.
type RepositoryJob struct {
	ID           string
	RepositoryID string
	Kind         RepositoryJobKind
	State        JobState
	// VerifyData reads every byte (verify mode "data") instead of
	// checking the structure only; SamplePercent reads only that share of
	// the packs (0 = all). DryRun makes a GC report without deleting.
	VerifyData    bool
	SamplePercent float64
	DryRun        bool
	Result        *MaintenanceResult // once finished
	CreatedBy     string             // user id ("" for the server's daily GC)
	CreatedAt     time.Time
	HeartbeatAt   time.Time // the running replica's last sign of life
	FinishedAt    *time.Time
}

// MaintenanceResult is the outcome of a verify or a garbage collection,
// kept on its job and on its repository (last_verify, last_gc).
type MaintenanceResult struct {
	JobID string `json:"job_id"`
	// OK: it ran to the end and, for a verify, found no damage.
	OK bool `json:"ok"`
	// Error says why it did not run to the end ("" when it did).
	Error      string         `json:"error,omitempty"`
	Summary    string         `json:"summary"`
	StartedAt  time.Time      `json:"started_at"`
	FinishedAt time.Time      `json:"finished_at"`
	Verify     *VerifySummary `json:"verify,omitempty"`
	GC         *GCSummary     `json:"gc,omitempty"`
}

// VerifySummary is what a verify checked and found.
type VerifySummary struct {
	Mode          string  `json:"mode"` // structure or data
	SamplePercent float64 `json:"sample_percent"`
	Snapshots     int     `json:"snapshots"`
	Packs         int     `json:"packs"`
	PacksRead     int     `json:"packs_read"`
	Blobs         int     `json:"blobs"`
	CheckedBytes  int64   `json:"checked_bytes"`
	Problems      int     `json:"problems"`
	// ProblemKinds counts the problems by kind (missing_pack, corrupt_blob…).
	ProblemKinds map[string]int `json:"problem_kinds,omitempty"`
	// DamagedPacks and AffectedSnapshots name the objects at fault and
	// the snapshots that lose content through them (at most 100 each).
	DamagedPacks      []string `json:"damaged_packs,omitempty"`
	AffectedSnapshots []string `json:"affected_snapshots,omitempty"`
}

// GCSummary is what a garbage collection found and did (or, in a dry run,
// would do).
type GCSummary struct {
	DryRun         bool  `json:"dry_run"`
	Snapshots      int   `json:"snapshots"`
	LiveBlobs      int   `json:"live_blobs"`
	DeadBlobs      int   `json:"dead_blobs"`
	DeletedBlobs   int   `json:"deleted_blobs"`
	DeletedPacks   int   `json:"deleted_packs"`
	RepackedPacks  int   `json:"repacked_packs"`
	OrphanPacks    int   `json:"orphan_packs"`
	WrittenBytes   int64 `json:"written_bytes"`
	ReclaimedBytes int64 `json:"reclaimed_bytes"`
}
