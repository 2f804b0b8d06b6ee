package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/cofferhq/coffer/internal/server/storage"
	"github.com/danielgtaylor/huma/v2"
)

// Endpoint is an S3-compatible server on the wire.
type Endpoint struct {
	ID          string    `json:"id"`
	DisplayName string    `json:"display_name"`
	URL         string    `json:"url" doc:"The server's host[:port], without a scheme."`
	HTTPS       bool      `json:"https"`
	Type        string    `json:"type" enum:"s3,ceph,minio,aws"`
	Region      string    `json:"region" doc:"Empty lets the server say."`
	Addressing  string    `json:"addressing" enum:"path,virtual" doc:"path: https://host/bucket/key; virtual: https://bucket.host/key."`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func toEndpoint(e *coffer.Endpoint) Endpoint {
	return Endpoint{ID: e.ID, DisplayName: e.DisplayName, URL: e.URL, HTTPS: e.HTTPS, Type: string(e.Type), Region: e.Region,
		Addressing: string(e.Addressing), CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
}

// EndpointInput is the body of POST /api/v1/endpoints and PUT /api/v1/endpoints/{id}.
type EndpointInput struct {
	DisplayName string `json:"display_name" minLength:"1" maxLength:"400" doc:"1 to 100 characters, unique regardless of letter case."`
	URL         string `json:"url" minLength:"1" maxLength:"255" doc:"host[:port] of the S3 server, e.g. s3.eu-west-1.amazonaws.com or 10.0.0.5:9000; no scheme or path."`
	HTTPS       *bool  `json:"https,omitempty" doc:"Default true."`
	Type        string `json:"type,omitempty" enum:"s3,ceph,minio,aws" doc:"Default s3."`
	Region      string `json:"region,omitempty" maxLength:"64"`
	Addressing  string `json:"addressing,omitempty" enum:"path,virtual" doc:"Default virtual for aws, path otherwise."`
}

func (in *EndpointInput) spec() storage.EndpointSpec {
	s := storage.EndpointSpec{DisplayName: in.DisplayName, URL: in.URL, HTTPS: true, Type: coffer.EndpointType(in.Type),
		Region: in.Region, Addressing: coffer.Addressing(in.Addressing)}
	if in.HTTPS != nil {
		s.HTTPS = *in.HTTPS
	}
	return s
}

type endpointOut struct {
	Body struct {
		Endpoint Endpoint `json:"endpoint"`
	}
}

func newEndpointOut(e *coffer.Endpoint) *endpointOut {
	out := &endpointOut{}
	out.Body.Endpoint = toEndpoint(e)
	return out
}

// Chunker is a repository's chunking parameters on the wire.
type Chunker struct {
	Algorithm string `json:"algorithm"`
	Min       int    `json:"min"`
	Avg       int    `json:"avg"`
	Max       int    `json:"max"`
}

// RepositoryJob is a running verify or garbage collection on the wire.
type RepositoryJob struct {
	ID            string    `json:"id"`
	Kind          string    `json:"kind" enum:"verify,gc"`
	Mode          string    `json:"mode,omitempty" enum:"structure,data" doc:"A verify's mode."`
	SamplePercent float64   `json:"sample_percent,omitempty" doc:"The share of packs a data verify reads."`
	DryRun        bool      `json:"dry_run,omitempty" doc:"A GC that only reports."`
	CreatedBy     string    `json:"created_by" doc:"The user who started it; empty for the server's daily GC."`
	StartedAt     time.Time `json:"started_at"`
	HeartbeatAt   time.Time `json:"heartbeat_at" doc:"The last sign of life of the server running it."`
}

func toRepositoryJob(j *coffer.RepositoryJob) RepositoryJob {
	out := RepositoryJob{ID: j.ID, Kind: string(j.Kind), SamplePercent: j.SamplePercent, DryRun: j.DryRun, CreatedBy: j.CreatedBy,
		StartedAt: j.CreatedAt, HeartbeatAt: j.HeartbeatAt}
	if j.Kind == coffer.JobVerify {
		out.Mode = "structure"
		if j.VerifyData {
			out.Mode = "data"
		}
	}
	return out
}

// Repository is a repository on the wire. Its credentials never are: only
// whether it has them.
type Repository struct {
	ID         string                    `json:"id" doc:"The repository's own id, from its config."`
	Name       string                    `json:"name"`
	Kind       string                    `json:"kind" enum:"local,s3"`
	Path       string                    `json:"path" doc:"local: the directory on the server."`
	EndpointID string                    `json:"endpoint_id" doc:"s3: the endpoint it lives on."`
	Bucket     string                    `json:"bucket"`
	Prefix     string                    `json:"prefix"`
	HasSecret  bool                      `json:"has_secret" doc:"Whether S3 credentials are stored (they are never shown)."`
	QuotaBytes int64                     `json:"quota_bytes" doc:"0: no quota."`
	QuotaLevel int                       `json:"quota_level" enum:"0,80,95" doc:"The quota warning level its usage reached, in percent."`
	Encrypted  bool                      `json:"encrypted"`
	Chunker    Chunker                   `json:"chunker"`
	IsDefault  bool                      `json:"is_default" doc:"The server's default repository (from --repository-dir or --repository-url); it cannot be deleted."`
	LastVerify *coffer.MaintenanceResult `json:"last_verify,omitempty" doc:"The outcome of the latest verify; absent before the first."`
	LastGC     *coffer.MaintenanceResult `json:"last_gc,omitempty" doc:"The outcome of the latest garbage collection; absent before the first."`
	Jobs       []RepositoryJob           `json:"running_jobs" doc:"Verifies and garbage collections running now."`
	CreatedAt  time.Time                 `json:"created_at"`
	UpdatedAt  time.Time                 `json:"updated_at"`
}

func toRepository(r *coffer.Repository, running []coffer.RepositoryJob) Repository {
	jobs := []RepositoryJob{}
	for i := range running {
		if running[i].RepositoryID == r.ID {
			jobs = append(jobs, toRepositoryJob(&running[i]))
		}
	}
	return Repository{ID: r.ID, Name: r.Name, Kind: string(r.Kind), Path: r.Path, EndpointID: r.EndpointID, Bucket: r.Bucket,
		Prefix: r.Prefix, HasSecret: len(r.Credentials) > 0, QuotaBytes: r.QuotaBytes, QuotaLevel: r.QuotaLevel, Encrypted: r.Encrypted,
		Chunker:   Chunker{Algorithm: r.Chunker.Algorithm, Min: r.Chunker.Min, Avg: r.Chunker.Avg, Max: r.Chunker.Max},
		IsDefault: r.IsDefault, LastVerify: r.LastVerify, LastGC: r.LastGC, Jobs: jobs, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// RepositoryInput is the body of POST /api/v1/repositories and PUT
// /api/v1/repositories/{id}.
type RepositoryInput struct {
	Name       string  `json:"name" minLength:"1" maxLength:"400" doc:"1 to 100 characters, unique regardless of letter case."`
	Kind       string  `json:"kind,omitempty" enum:"local,s3" doc:"Required on create; on update, if given, it must be the repository's."`
	Path       string  `json:"path,omitempty" maxLength:"4096" doc:"local: an absolute directory on the server, created if missing."`
	EndpointID string  `json:"endpoint_id,omitempty" maxLength:"64" doc:"s3: the endpoint."`
	Bucket     string  `json:"bucket,omitempty" maxLength:"63" doc:"s3: an existing bucket."`
	Prefix     string  `json:"prefix,omitempty" maxLength:"512" doc:"s3: the key prefix; empty uses the whole bucket."`
	AccessKey  *string `json:"access_key,omitempty" maxLength:"256" writeOnly:"true" doc:"s3: write-only, never returned. On update, omit both keys to keep the stored ones."`
	SecretKey  *string `json:"secret_key,omitempty" maxLength:"1024" writeOnly:"true" doc:"s3: write-only, never returned."`
	QuotaBytes int64   `json:"quota_bytes,omitempty" minimum:"0" doc:"0 or omitted: no quota."`
	Encrypted  *bool   `json:"encrypted,omitempty" doc:"Default true for a new repository; an existing one keeps its own (it never changes)."`
}

func (in *RepositoryInput) spec() storage.RepositorySpec {
	s := storage.RepositorySpec{Name: in.Name, Kind: coffer.RepositoryKind(in.Kind), Path: in.Path, EndpointID: in.EndpointID,
		Bucket: in.Bucket, Prefix: in.Prefix, QuotaBytes: in.QuotaBytes, Encrypted: in.Encrypted}
	if in.AccessKey != nil || in.SecretKey != nil {
		s.Credentials = &storage.Credentials{}
		if in.AccessKey != nil {
			s.Credentials.AccessKey = *in.AccessKey
		}
		if in.SecretKey != nil {
			s.Credentials.SecretKey = *in.SecretKey
		}
	}
	return s
}

type repositoryOut struct {
	Body struct {
		Repository Repository `json:"repository"`
	}
}

func newRepositoryOut(r *coffer.Repository, running []coffer.RepositoryJob) *repositoryOut {
	out := &repositoryOut{}
	out.Body.Repository = toRepository(r, running)
	return out
}

// withJobs answers with repository r (unless err) and its running jobs.
func withJobs(ctx context.Context, svc *storage.Service, r *coffer.Repository, err error) (*repositoryOut, error) {
	if err != nil {
		return nil, err
	}
	running, err := svc.RunningJobs(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	return newRepositoryOut(r, running), nil
}

// GroupUsage is what one client's or plan's snapshots take.
type GroupUsage struct {
	Snapshots    int   `json:"snapshots"`
	UniqueBytes  int64 `json:"unique_bytes" doc:"Stored bytes only these snapshots reach: what forgetting them frees at the next GC."`
	SharedBytes  int64 `json:"shared_bytes" doc:"Stored bytes these snapshots share with others."`
	UniqueBlobs  int   `json:"unique_blobs"`
	SharedBlobs  int   `json:"shared_blobs"`
	LogicalBytes int64 `json:"logical_bytes" doc:"The size of their files, per snapshot."`
}

// ClientUsage is one client's share of a repository.
type ClientUsage struct {
	ClientID string `json:"client_id"`
	GroupUsage
}

// PlanUsage is one plan's share of a repository.
type PlanUsage struct {
	PlanID string `json:"plan_id" doc:"Empty for the ad-hoc backups."`
	GroupUsage
}

// RepositoryUsage is how a repository's storage is used.
type RepositoryUsage struct {
	RepositoryID     string        `json:"repository_id"`
	StoredBytes      int64         `json:"stored_bytes" doc:"The bytes of its packs in storage."`
	LogicalBytes     int64         `json:"logical_bytes" doc:"The size of every snapshot's files added up."`
	DedupRatio       float64       `json:"dedup_ratio" doc:"Logical bytes per stored blob byte: what deduplication and compression save (0 when empty)."`
	Packs            int           `json:"packs"`
	Blobs            int           `json:"blobs"`
	BlobBytes        int64         `json:"blob_bytes"`
	Snapshots        int           `json:"snapshots"`
	QuotaBytes       int64         `json:"quota_bytes" doc:"0: no quota."`
	QuotaUsedPercent float64       `json:"quota_used_percent" doc:"stored_bytes as a percentage of the quota; 0 without one."`
	Clients          []ClientUsage `json:"clients"`
	Plans            []PlanUsage   `json:"plans"`
}

func groupUsage(g storage.GroupUsage) GroupUsage {
	return GroupUsage{Snapshots: g.Snapshots, UniqueBytes: g.UniqueBytes, SharedBytes: g.SharedBytes, UniqueBlobs: g.UniqueBlobs,
		SharedBlobs: g.SharedBlobs, LogicalBytes: g.LogicalBytes}
}

func toUsage(u *storage.Usage) RepositoryUsage {
	out := RepositoryUsage{RepositoryID: u.RepositoryID, StoredBytes: u.StoredBytes, LogicalBytes: u.LogicalBytes,
		DedupRatio: u.DedupRatio, Packs: u.Packs, Blobs: u.Blobs, BlobBytes: u.BlobBytes, Snapshots: u.Snapshots,
		QuotaBytes: u.QuotaBytes, Clients: []ClientUsage{}, Plans: []PlanUsage{}}
	if u.QuotaBytes > 0 {
		out.QuotaUsedPercent = float64(u.StoredBytes) * 100 / float64(u.QuotaBytes)
	}
	for _, c := range u.Clients {
		out.Clients = append(out.Clients, ClientUsage{ClientID: c.ID, GroupUsage: groupUsage(c)})
	}
	for _, p := range u.Plans {
		out.Plans = append(out.Plans, PlanUsage{PlanID: p.ID, GroupUsage: groupUsage(p)})
	}
	return out
}

// JobStarted is the answer to starting a background job.
type JobStarted struct {
	Message string `json:"message"`
	Success bool   `json:"success"`
	JobID   string `json:"job_id"`
}

func (s *Server) registerStorage() {
	if s.opts.Storage == nil {
		return
	}
	svc := s.opts.Storage
	s.registerEndpoints(svc)
	s.registerRepositories(svc)
	s.registerRepositoryJobs(svc)
}

func (s *Server) registerEndpoints(svc *storage.Service) {
	tags := []string{"storage"}
	handle(s, Read, huma.Operation{
		OperationID: "list-endpoints", Method: http.MethodGet, Path: "/api/v1/endpoints", Tags: tags,
		Summary: "List storage endpoints", Description: "S3-compatible servers, ordered by display name, offset-paginated.",
	}, func(ctx context.Context, in *OffsetParams) (*struct{ Body *Page[Endpoint] }, error) {
		es, total, err := svc.ListEndpoints(ctx, metadb.EndpointFilter{Limit: in.PageSize, Offset: in.offset()})
		if err != nil {
			return nil, err
		}
		items := make([]Endpoint, len(es))
		for i := range es {
			items[i] = toEndpoint(&es[i])
		}
		return &struct{ Body *Page[Endpoint] }{offsetPage(items, *in, total)}, nil
	})

	type bodyIn struct {
		Body EndpointInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "create-endpoint", Method: http.MethodPost, Path: "/api/v1/endpoints", Tags: tags,
		Summary: "Create a storage endpoint",
		Description: "Records an S3-compatible server. It holds no credentials (each repository has its own), so the server " +
			"is contacted only when a repository is created on it.",
		DefaultStatus: http.StatusCreated, Errors: []int{http.StatusConflict},
	}, func(ctx context.Context, in *bodyIn) (*endpointOut, error) {
		e, err := svc.CreateEndpoint(ctx, principalFrom(ctx), in.Body.spec())
		if err != nil {
			return nil, err
		}
		return newEndpointOut(e), nil
	})

	type idIn struct {
		ID string `path:"id" maxLength:"64"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-endpoint", Method: http.MethodGet, Path: "/api/v1/endpoints/{id}", Tags: tags,
		Summary: "Get a storage endpoint", Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *idIn) (*endpointOut, error) {
		e, err := svc.GetEndpoint(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		return newEndpointOut(e), nil
	})

	type updateIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body EndpointInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "update-endpoint", Method: http.MethodPut, Path: "/api/v1/endpoints/{id}", Tags: tags,
		Summary: "Replace a storage endpoint",
		Description: "Replaces the endpoint; omitted optional fields take their defaults. When its address changes (url, https, " +
			"region, addressing), every repository on it is reached at the new address with its credentials first, and the " +
			"change is refused, naming the repository (metadata.repository_id), if one is not.",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *updateIn) (*endpointOut, error) {
		e, err := svc.UpdateEndpoint(ctx, principalFrom(ctx), in.ID, in.Body.spec())
		if err != nil {
			return nil, err
		}
		return newEndpointOut(e), nil
	})

	handle(s, Manage, huma.Operation{
		OperationID: "delete-endpoint", Method: http.MethodDelete, Path: "/api/v1/endpoints/{id}", Tags: tags,
		Summary:     "Delete a storage endpoint",
		Description: "Deletes the endpoint; refused with 409 endpoint_in_use while repositories live on it.",
		Errors:      []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *idIn) (*struct{ Body CommandResult }, error) {
		e, err := svc.DeleteEndpoint(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Endpoint deleted.", Success: true, ID: e.ID}}, nil
	})
}

func (s *Server) registerRepositories(svc *storage.Service) {
	tags := []string{"storage"}
	type listIn struct {
		OffsetParams
		EndpointID string `query:"endpoint_id" maxLength:"64" doc:"Only the repositories on this endpoint."`
		Kind       string `query:"kind" enum:"local,s3" doc:"Only local or only S3 repositories."`
	}
	handle(s, Read, huma.Operation{
		OperationID: "list-repositories", Method: http.MethodGet, Path: "/api/v1/repositories", Tags: tags,
		Summary: "List repositories", Description: "Repositories ordered by name, offset-paginated. Credentials are never shown.",
	}, func(ctx context.Context, in *listIn) (*struct{ Body *Page[Repository] }, error) {
		rs, total, err := svc.ListRepositories(ctx, metadb.RepositoryFilter{EndpointID: in.EndpointID,
			Kind: coffer.RepositoryKind(in.Kind), Limit: in.PageSize, Offset: in.offset()})
		if err != nil {
			return nil, err
		}
		running, err := svc.RunningJobs(ctx, "")
		if err != nil {
			return nil, err
		}
		items := make([]Repository, len(rs))
		for i := range rs {
			items[i] = toRepository(&rs[i], running)
		}
		return &struct{ Body *Page[Repository] }{offsetPage(items, in.OffsetParams, total)}, nil
	})

	type bodyIn struct {
		Body RepositoryInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "create-repository", Method: http.MethodPost, Path: "/api/v1/repositories", Tags: tags,
		Summary: "Create or attach a repository",
		Description: "Tests the location with a real write, read and delete, then attaches the Coffer repository found there " +
			"(its id becomes the record's; one made with another master key is 409 repository_key_mismatch, one already " +
			"attached 409 repository_exists) or, in an empty location, initialises a new one (encrypted unless encrypted is " +
			"false). A location that holds other objects is 409 repository_prefix_not_empty. Storage errors say what failed: " +
			"400 storage_access_denied (credentials), 400 bucket_not_found, 503 storage_unreachable, 504 storage_timeout, " +
			"400 storage_unusable (e.g. https against a plain-http server). An unknown endpoint is 400 unknown_endpoint.",
		DefaultStatus: http.StatusCreated,
		Errors:        []int{http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *bodyIn) (*repositoryOut, error) {
		r, err := svc.CreateRepository(ctx, principalFrom(ctx), in.Body.spec())
		if err != nil {
			return nil, err
		}
		return newRepositoryOut(r, nil), nil
	})

	type idIn struct {
		ID string `path:"id" maxLength:"64"`
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-repository", Method: http.MethodGet, Path: "/api/v1/repositories/{id}", Tags: tags,
		Summary: "Get a repository", Description: "The repository with its last verify and GC results and its running jobs.",
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *idIn) (*repositoryOut, error) {
		r, err := svc.GetRepository(ctx, in.ID)
		return withJobs(ctx, svc, r, err)
	})

	type updateIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body RepositoryInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "update-repository", Method: http.MethodPut, Path: "/api/v1/repositories/{id}", Tags: tags,
		Summary: "Replace a repository's settings",
		Description: "Replaces the name and the quota (omitted: none) and, for S3, the credentials (omitted: unchanged; new " +
			"ones are tested with a write, read and delete first). The location (kind, path, endpoint, bucket, prefix) and " +
			"encryption never change: given, they must be the repository's (400 repository_immutable). The default " +
			"repository's credentials come from the server's environment (409 default_repository_credentials).",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *updateIn) (*repositoryOut, error) {
		r, err := svc.UpdateRepository(ctx, principalFrom(ctx), in.ID, in.Body.spec())
		return withJobs(ctx, svc, r, err)
	})

	handle(s, Manage, huma.Operation{
		OperationID: "delete-repository", Method: http.MethodDelete, Path: "/api/v1/repositories/{id}", Tags: tags,
		Summary: "Delete a repository's record",
		Description: "Deletes the record only: the data stays in its directory or bucket, and creating a repository at the " +
			"same location attaches it again. Refused with 409 repository_in_use (metadata: backups, plans) while backup " +
			"records or plans refer to it — forget its backups and delete or move its plans first — with 409 " +
			"repository_is_default for the server's default repository, and with 409 repository_job_running during a " +
			"verify or GC.",
		Errors: []int{http.StatusNotFound, http.StatusConflict},
	}, func(ctx context.Context, in *idIn) (*struct{ Body CommandResult }, error) {
		r, err := svc.DeleteRepository(ctx, principalFrom(ctx), in.ID)
		if err != nil {
			return nil, err
		}
		return &struct{ Body CommandResult }{CommandResult{Message: "Repository record deleted; its data was kept.", Success: true,
			ID: r.ID}}, nil
	})

	type usageOut struct {
		Body struct {
			Usage RepositoryUsage `json:"usage"`
		}
	}
	handle(s, Read, huma.Operation{
		OperationID: "get-repository-usage", Method: http.MethodGet, Path: "/api/v1/repositories/{id}/usage", Tags: tags,
		Summary: "Get a repository's usage",
		Description: "Stored and logical bytes, the dedup ratio and the quota, and for each client and each plan the bytes " +
			"only their snapshots reach versus those they share. The split walks every snapshot's trees: it takes a while " +
			"on a large repository.",
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *idIn) (*usageOut, error) {
		u, err := svc.Usage(ctx, in.ID)
		if err != nil {
			return nil, err
		}
		out := &usageOut{}
		out.Body.Usage = toUsage(u)
		return out, nil
	})
}

// VerifyInput is the body of POST /api/v1/repositories/{id}/verify.
type VerifyInput struct {
	Mode          string  `json:"mode,omitempty" enum:"structure,data" doc:"structure (default): every referenced blob indexed, every pack present with its size and trailer; data: also read and authenticate every byte."`
	SamplePercent float64 `json:"sample_percent,omitempty" minimum:"0" maximum:"100" doc:"With mode data: read only this share of the packs, at random (0 or omitted: all)."`
}

// GCInput is the body of POST /api/v1/repositories/{id}/gc.
type GCInput struct {
	DryRun bool `json:"dry_run,omitempty" doc:"Only report what would be reclaimed."`
}

func (s *Server) registerRepositoryJobs(svc *storage.Service) {
	tags := []string{"storage"}
	type verifyIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body *VerifyInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "verify-repository", Method: http.MethodPost, Path: "/api/v1/repositories/{id}/verify", Tags: tags,
		Summary: "Verify a repository",
		Description: "Starts a verify in the background and answers 202 with its job_id. Its result goes to the repository's " +
			"last_verify and to the event stream (repository.verify_succeeded, _damaged or _failed). One verify runs per " +
			"repository at a time: 409 repository_job_running otherwise.",
		DefaultStatus: http.StatusAccepted,
		Errors:        []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *verifyIn) (*struct{ Body JobStarted }, error) {
		body := VerifyInput{}
		if in.Body != nil {
			body = *in.Body
		}
		j, err := svc.Verify(ctx, principalFrom(ctx), in.ID, body.Mode == "data", body.SamplePercent)
		if err != nil {
			return nil, err
		}
		return &struct{ Body JobStarted }{JobStarted{Message: "Verify started; its result is published as an event and kept on the repository.",
			Success: true, JobID: j.ID}}, nil
	})

	type gcIn struct {
		ID   string `path:"id" maxLength:"64"`
		Body *GCInput
	}
	handle(s, Manage, huma.Operation{
		OperationID: "gc-repository", Method: http.MethodPost, Path: "/api/v1/repositories/{id}/gc", Tags: tags,
		Summary: "Garbage-collect a repository",
		Description: "Starts a garbage collection in the background and answers 202 with its job_id: it removes what no " +
			"snapshot needs (backups may run meanwhile). Its result goes to the repository's last_gc and to the event stream. " +
			"One runs per repository at a time, across servers: 409 repository_job_running otherwise.",
		DefaultStatus: http.StatusAccepted,
		Errors:        []int{http.StatusNotFound, http.StatusConflict, http.StatusServiceUnavailable, http.StatusGatewayTimeout},
	}, func(ctx context.Context, in *gcIn) (*struct{ Body JobStarted }, error) {
		dry := in.Body != nil && in.Body.DryRun
		j, err := svc.GC(ctx, principalFrom(ctx), in.ID, dry)
		if err != nil {
			return nil, err
		}
		msg := "Garbage collection started; its result is published as an event and kept on the repository."
		if dry {
			msg = "Garbage collection dry run started; its report is published as an event and kept on the repository."
		}
		return &struct{ Body JobStarted }{JobStarted{Message: msg, Success: true, JobID: j.ID}}, nil
	})
}
