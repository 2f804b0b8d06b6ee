package storage

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/metadb"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// RepositorySpec is what a person says about a repository. On create,
// Kind and its location (Path, or EndpointID, Bucket and Prefix) say where
// it lives. On update the location and Encrypted cannot change: given, they
// must be what they are.
type RepositorySpec struct {
	Name       string
	Kind       coffer.RepositoryKind
	Path       string // local: an absolute directory on the server
	EndpointID string // s3
	Bucket     string
	Prefix     string
	// Credentials are the S3 access key and secret; nil means none on
	// create and unchanged on update.
	Credentials *Credentials
	QuotaBytes  int64 // 0 = no quota
	// Encrypted nil means true for a new repository; an existing one
	// found at the location keeps its own setting.
	Encrypted *bool
}

func asCoffer(err error, ce **coffer.Error) bool { return errors.As(err, ce) }

// cleanPrefix turns "/coffer//repo1/" into "coffer/repo1".
func cleanPrefix(p string) (string, error) {
	var parts []string
	for el := range strings.SplitSeq(p, "/") {
		if el != "" {
			parts = append(parts, el)
		}
	}
	joined := strings.Join(parts, "/")
	if joined == "" {
		return "", nil
	}
	if len(joined) > 512 || blobstore.ValidName(joined) != nil {
		return "", invalid("prefix", "invalid_prefix",
			"prefix %q must be letters, digits and ._- between slashes, without . or .. elements", truncate(p))
	}
	return joined, nil
}

// validateLocation checks where a new repository lives and returns its
// endpoint (nil for a local one).
func (s *Service) validateLocation(ctx context.Context, spec *RepositorySpec) (*coffer.Endpoint, error) {
	switch spec.Kind {
	case coffer.RepositoryLocal:
		if spec.EndpointID != "" || spec.Bucket != "" || spec.Prefix != "" || spec.Credentials != nil {
			return nil, invalid("kind", "invalid_location",
				"a local repository has a path only: leave endpoint_id, bucket, prefix and the credentials out")
		}
		if !filepath.IsAbs(spec.Path) || strings.IndexByte(spec.Path, 0) >= 0 || len(spec.Path) > 4096 {
			return nil, invalid("path", "invalid_path",
				"path %q is not an absolute directory on the server: give the full path, starting with /", truncate(spec.Path))
		}
		spec.Path = filepath.Clean(spec.Path)
		return nil, nil
	case coffer.RepositoryS3:
		if spec.Path != "" {
			return nil, invalid("path", "invalid_location", "an S3 repository has no path: give endpoint_id, bucket and prefix")
		}
		if spec.EndpointID == "" {
			return nil, invalid("endpoint_id", "endpoint_required", "an S3 repository needs the endpoint_id of the server it lives on")
		}
		e, err := s.store.GetEndpoint(ctx, spec.EndpointID)
		if coffer.IsKind(err, coffer.KindNotFound) {
			return nil, invalid("endpoint_id", "unknown_endpoint",
				"no storage endpoint with id %q: create it first (POST /api/v1/endpoints)", truncate(spec.EndpointID)).Wrap(err)
		}
		if err != nil {
			return nil, err
		}
		if err := s3utils.CheckValidBucketNameStrict(spec.Bucket); err != nil {
			return nil, invalid("bucket", "invalid_bucket", "bucket %q is not a valid bucket name (%v)", truncate(spec.Bucket), err)
		}
		if spec.Prefix, err = cleanPrefix(spec.Prefix); err != nil {
			return nil, err
		}
		if err := checkCredentials(spec.Credentials); err != nil {
			return nil, err
		}
		return e, nil
	}
	if spec.Kind == "" {
		return nil, invalid("kind", "kind_required",
			"say where the repository lives: kind local with a path, or kind s3 with endpoint_id and bucket")
	}
	return nil, invalid("kind", "invalid_kind", "kind %q is not local or s3", truncate(string(spec.Kind)))
}

// checkCredentials refuses an access key without its secret, or the
// reverse; nil (none given) passes.
func checkCredentials(c *Credentials) error {
	if c != nil && (c.AccessKey == "") != (c.SecretKey == "") {
		return invalid("secret_key", "invalid_credentials", "give both access_key and secret_key, or neither for anonymous access")
	}
	return nil
}

// chunkerOf is the chunking parameters of a repository's config, as
// its record keeps them.
func chunkerOf(cfg *repository.Config) coffer.ChunkerParams {
	return coffer.ChunkerParams{Algorithm: cfg.Chunker.Algorithm, Min: cfg.Chunker.Min, Avg: cfg.Chunker.Avg, Max: cfg.Chunker.Max}
}

func validateQuota(q int64) error {
	if q < 0 {
		return invalid("quota_bytes", "invalid_quota", "quota_bytes must be 0 (no quota) or positive (got %d)", q)
	}
	return nil
}

// location is how to reach repository r: its directory, or its bucket on
// endpoint e with credentials c.
func location(r *coffer.Repository, e *coffer.Endpoint, c Credentials) Location {
	if r.Kind != coffer.RepositoryS3 {
		return Location{Path: r.Path}
	}
	cfg := s3.Config{Endpoint: e.URL, UseTLS: e.HTTPS, Region: e.Region, Bucket: r.Bucket, Prefix: r.Prefix,
		AccessKey: c.AccessKey, SecretKey: c.SecretKey, Addressing: s3.AddressingPath}
	if e.Addressing == coffer.AddressingVirtual {
		cfg.Addressing = s3.AddressingVirtualHost
	}
	return Location{S3: &cfg}
}

// where describes repository r's location for messages, without secrets.
func where(r *coffer.Repository, e *coffer.Endpoint) string {
	if r.Kind != coffer.RepositoryS3 {
		return "local:" + r.Path
	}
	w := "s3:" + scheme(e) + "://" + e.URL + "/" + r.Bucket
	if r.Prefix != "" {
		w += "/" + r.Prefix
	}
	return w
}

// reach returns how to reach repository r with its stored credentials,
// and its endpoint.
func (s *Service) reach(ctx context.Context, r *coffer.Repository) (Location, *coffer.Endpoint, error) {
	var e *coffer.Endpoint
	if r.Kind == coffer.RepositoryS3 {
		var err error
		if e, err = s.store.GetEndpoint(ctx, r.EndpointID); err != nil {
			return Location{}, nil, fmt.Errorf("repository %s: %w", r.ID, err)
		}
	}
	loc, err := s.locate(r, e)
	return loc, e, err
}

// locate is reach with r's endpoint e (nil for a local repository) at
// hand.
func (s *Service) locate(r *coffer.Repository, e *coffer.Endpoint) (Location, error) {
	c, err := s.sealer.open(r.ID, r.Credentials)
	if err != nil {
		return Location{}, coffer.Errorf(coffer.KindConflict, "repository_credentials_unreadable",
			"repository %q: %v", r.Name, err).With("repository_id", r.ID)
	}
	return location(r, e, c), nil
}

// prepare readies the storage b for a new repository record: it attaches
// the Coffer repository there, or initialises one in an empty location,
// after proving it can write, read and delete. attached reports which.
func (s *Service) prepare(ctx context.Context, b blobstore.Backend, encrypted *bool) (cfg *repository.Config, attached bool, err error) {
	at := b.Location()
	cfg, _, err = repository.OpenConfig(ctx, b, s.master)
	switch {
	case err == nil:
		attached = true
		if encrypted != nil && *encrypted != cfg.Encrypted {
			return nil, false, coffer.Errorf(coffer.KindConflict, "repository_encryption_mismatch",
				"%s holds an existing Coffer repository whose encryption is %s, not what was asked for: encryption never changes; leave encrypted out to attach it as it is",
				at, onOff(cfg.Encrypted)).With("location", at).With("encrypted", cfg.Encrypted)
		}
	case errors.Is(err, repository.ErrNotRepository):
		full, lerr := holdsObjects(ctx, b, "")
		if lerr != nil {
			return nil, false, accessError(lerr, "list the storage", at)
		}
		if full {
			return nil, false, coffer.Errorf(coffer.KindConflict, "repository_prefix_not_empty",
				"%s holds objects but no Coffer repository: a repository is created only in an empty location or attached where one exists; choose another directory or prefix",
				at).With("location", at)
		}
	default:
		return nil, false, configError(ctx, b, s.master, err)
	}
	if err := probe(ctx, b); err != nil {
		return nil, false, accessError(err, "test the storage with a write, read and delete", at)
	}
	if attached {
		return cfg, true, nil
	}
	enc := encrypted == nil || *encrypted
	cfg, _, err = repository.Init(ctx, b, repository.InitOptions{MasterKey: s.master, Encrypted: enc, Now: s.now})
	if errors.Is(err, blobstore.ErrExists) { // another request created it meanwhile
		if cfg, _, err = repository.OpenConfig(ctx, b, s.master); err != nil {
			return nil, false, configError(ctx, b, s.master, err)
		}
		return cfg, true, nil
	}
	if err != nil {
		return nil, false, accessError(err, "create the repository", at)
	}
	return cfg, false, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// CreateRepository records a new repository. It opens the location
// (creating a local directory), attaches the Coffer repository found there
// or — when the location is empty — initialises one, encrypted unless
// spec says otherwise, after a write, read and delete of a test object.
// The record's id is the repository's config id: a repository attached
// twice is "repository_exists". The errors say what failed: credentials
// ("storage_access_denied"), bucket ("bucket_not_found"), the server
// ("storage_unreachable", "storage_timeout"), a foreign location
// ("repository_prefix_not_empty") or another server's repository
// ("repository_key_mismatch").
func (s *Service) CreateRepository(ctx context.Context, p *coffer.Principal, spec RepositorySpec) (*coffer.Repository, error) {
	if err := validateName("name", "repository", spec.Name); err != nil {
		return nil, err
	}
	if err := validateQuota(spec.QuotaBytes); err != nil {
		return nil, err
	}
	e, err := s.validateLocation(ctx, &spec)
	if err != nil {
		return nil, err
	}
	var creds Credentials
	if spec.Credentials != nil {
		creds = *spec.Credentials
	}
	r := &coffer.Repository{Name: spec.Name, Kind: spec.Kind, Path: spec.Path, EndpointID: spec.EndpointID, Bucket: spec.Bucket,
		Prefix: spec.Prefix, QuotaBytes: spec.QuotaBytes}
	at := where(r, e)
	pctx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	b, err := OpenBackend(pctx, location(r, e, creds))
	if err != nil {
		return nil, accessError(err, "open the storage", at)
	}
	defer b.Close()
	cfg, attached, err := s.prepare(pctx, b, spec.Encrypted)
	if err != nil {
		return nil, err
	}
	r.ID, r.Encrypted, r.Chunker = cfg.ID, cfg.Encrypted, chunkerOf(cfg)
	if r.Credentials, err = s.sealer.seal(r.ID, creds); err != nil {
		return nil, err
	}
	if err := s.store.CreateRepository(ctx, r); err != nil {
		return nil, err
	}
	level, msg := coffer.LevelInfo, fmt.Sprintf("%s created repository “%s” (%s) at %s, encryption %s.", actorName(p), r.Name, r.ID, at, onOff(r.Encrypted))
	if attached {
		msg = fmt.Sprintf("%s attached the existing repository “%s” (%s) at %s, encryption %s.", actorName(p), r.Name, r.ID, at, onOff(r.Encrypted))
		if lost, err := s.indexLost(ctx, b, r.ID); err == nil && lost {
			level = coffer.LevelWarning
			msg += " Its storage holds packs this server's index does not know (it was written by another server, or the database was replaced): its earlier backups are not listed, and garbage collection refuses to run on it until the index is rebuilt."
		}
	}
	s.audit(ctx, p, repoRef(r.ID), level, EventCreated, "Repository created", msg)
	return r, nil
}

// indexLost is IndexLooksLost before the repository is open.
func (s *Service) indexLost(ctx context.Context, b blobstore.Backend, id string) (bool, error) {
	n, err := s.store.RepositoryStoredBytes(ctx, id)
	if err != nil || n > 0 {
		return false, err
	}
	return holdsObjects(ctx, b, "packs/")
}

// GetRepository returns repository id ("repository_not_found").
func (s *Service) GetRepository(ctx context.Context, id string) (*coffer.Repository, error) {
	return s.store.GetRepository(ctx, id)
}

// ListRepositories returns a page of repositories and how many match.
func (s *Service) ListRepositories(ctx context.Context, f metadb.RepositoryFilter) ([]coffer.Repository, int, error) {
	return s.store.ListRepositories(ctx, f)
}

// RunningJobs returns the verifies and garbage collections running on
// repository id, or on every repository when id is "".
func (s *Service) RunningJobs(ctx context.Context, id string) ([]coffer.RepositoryJob, error) {
	return s.store.RunningRepositoryJobs(ctx, id)
}

// immutable refuses a change of what never changes.
func immutable(field, what string) error {
	return invalid(field, "repository_immutable",
		"a repository's %s cannot change: create another repository (and move the plans to it) instead", what)
}

// checkImmutable compares the location and encryption given on update
// with the repository's.
func checkImmutable(old *coffer.Repository, spec *RepositorySpec) error {
	if spec.Kind != "" && spec.Kind != old.Kind {
		return immutable("kind", "kind")
	}
	if spec.Path != "" && filepath.Clean(spec.Path) != old.Path {
		return immutable("path", "path")
	}
	if spec.EndpointID != "" && spec.EndpointID != old.EndpointID {
		return immutable("endpoint_id", "endpoint")
	}
	if spec.Bucket != "" && spec.Bucket != old.Bucket {
		return immutable("bucket", "bucket")
	}
	if spec.Prefix != "" {
		if p, err := cleanPrefix(spec.Prefix); err != nil || p != old.Prefix {
			return immutable("prefix", "prefix")
		}
	}
	if spec.Encrypted != nil && *spec.Encrypted != old.Encrypted {
		return immutable("encrypted", "encryption")
	}
	return nil
}

// recheck proves that repository r is reached at endpoint e (nil: its
// own) with credentials c (nil: its stored ones): a write, read and
// delete, and a config there with r's id.
func (s *Service) recheck(ctx context.Context, r *coffer.Repository, e *coffer.Endpoint, c *Credentials) error {
	loc, own, err := s.reach(ctx, r)
	if err != nil {
		return err
	}
	if e == nil {
		e = own
	}
	if loc.S3 != nil {
		creds := Credentials{AccessKey: loc.S3.AccessKey, SecretKey: loc.S3.SecretKey}
		if c != nil {
			creds = *c
		}
		loc = location(r, e, creds)
	}
	at := where(r, e)
	pctx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	b, err := OpenBackend(pctx, loc)
	if err != nil {
		return accessError(err, "open the storage", at)
	}
	defer b.Close()
	cfg, _, err := repository.OpenConfig(pctx, b, s.master)
	if errors.Is(err, repository.ErrNotRepository) {
		return coffer.Errorf(coffer.KindConflict, "repository_not_there",
			"%s holds no Coffer repository: repository %q is not reached there", at, r.Name).With("location", at)
	}
	if err != nil {
		return configError(pctx, b, s.master, err)
	}
	if cfg.ID != r.ID {
		return coffer.Errorf(coffer.KindConflict, "repository_not_there",
			"%s holds repository %s, not %q (%s)", at, cfg.ID, r.Name, r.ID).With("location", at)
	}
	if err := probe(pctx, b); err != nil {
		return accessError(err, "test the storage with a write, read and delete", at)
	}
	return nil
}

// UpdateRepository replaces repository id's name, quota and — for an S3
// repository — credentials (omitted: unchanged). New credentials are
// tested first with a write, read and delete. Location and encryption
// cannot change ("repository_immutable"), nor the default repository's
// credentials, which come from the server's environment. The repository
// is reopened with its new settings on next use.
func (s *Service) UpdateRepository(ctx context.Context, p *coffer.Principal, id string, spec RepositorySpec) (*coffer.Repository, error) {
	if err := validateName("name", "repository", spec.Name); err != nil {
		return nil, err
	}
	if err := validateQuota(spec.QuotaBytes); err != nil {
		return nil, err
	}
	old, err := s.store.GetRepository(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := checkImmutable(old, &spec); err != nil {
		return nil, err
	}
	r := *old
	r.Name, r.QuotaBytes = spec.Name, spec.QuotaBytes
	var changes []string
	if c := spec.Credentials; c != nil {
		switch {
		case old.Kind != coffer.RepositoryS3:
			return nil, invalid("access_key", "credentials_for_local", "a local repository has no credentials: leave access_key and secret_key out")
		case old.IsDefault:
			return nil, coffer.Errorf(coffer.KindConflict, "default_repository_credentials",
				"the default repository's credentials come from COFFER_S3_ACCESS_KEY and COFFER_S3_SECRET_KEY: change them there and restart the server")
		}
		if err := checkCredentials(c); err != nil {
			return nil, err
		}
		if err := s.recheck(ctx, old, nil, c); err != nil {
			return nil, err
		}
		if r.Credentials, err = s.sealer.seal(id, *c); err != nil {
			return nil, err
		}
		changes = append(changes, "its credentials were replaced (and tested)")
	}
	if r.Name != old.Name {
		changes = append(changes, fmt.Sprintf("renamed from “%s”", old.Name))
	}
	if r.QuotaBytes != old.QuotaBytes {
		changes = append(changes, "quota "+describeQuota(r.QuotaBytes))
	}
	if err := s.store.UpdateRepository(ctx, &r); err != nil {
		return nil, err
	}
	s.forget(id)
	msg := fmt.Sprintf("%s updated repository “%s” (%s)", actorName(p), r.Name, r.ID)
	if len(changes) > 0 {
		msg += ": " + strings.Join(changes, "; ")
	}
	s.audit(ctx, p, repoRef(id), coffer.LevelInfo, EventUpdated, "Repository updated", msg+".")
	return &r, nil
}

func describeQuota(q int64) string {
	if q == 0 {
		return "removed"
	}
	return "set to " + formatBytes(q)
}

// DeleteRepository deletes repository id's record. Its data stays where
// it is (attach it again to use it). It is refused for the default
// repository and while backup records or plans refer to it
// ("repository_in_use", with their counts).
func (s *Service) DeleteRepository(ctx context.Context, p *coffer.Principal, id string) (*coffer.Repository, error) {
	r, err := s.store.DeleteRepository(ctx, id)
	if err != nil {
		return nil, err
	}
	s.forget(id)
	at := r.Path
	if r.Kind == coffer.RepositoryS3 {
		at = fmt.Sprintf("bucket %s prefix %q on endpoint %s", r.Bucket, r.Prefix, r.EndpointID)
	}
	s.audit(ctx, p, repoRef(id), coffer.LevelInfo, EventDeleted, "Repository deleted",
		fmt.Sprintf("%s deleted repository “%s” (%s). Its data stays at %s.", actorName(p), r.Name, r.ID, at))
	return r, nil
}

// forget drops what the service keeps of repository id: its open
// repository (reopened on next use) and its quota figures.
func (s *Service) forget(id string) {
	s.set.Drop(id)
	s.openedMu.Lock()
	delete(s.opened, id)
	s.openedMu.Unlock()
	s.quotaMu.Lock()
	delete(s.quota, id)
	s.quotaMu.Unlock()
}

// Open opens repository id from its record: its backend (local, or S3
// wrapped in the retry decorator) with its credentials, and the engine
// repository with its index. It is the opener of the service's repository
// set. An unknown id is "repository_not_found"; storage that does not
// answer or now holds another repository is an error saying so.
func (s *Service) Open(ctx context.Context, id string) (*repository.Repository, error) {
	r, err := s.store.GetRepository(ctx, id)
	if err != nil {
		return nil, err
	}
	loc, e, err := s.reach(ctx, r)
	if err != nil {
		return nil, err
	}
	at := where(r, e)
	octx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	b, err := OpenBackend(octx, loc)
	if err != nil {
		return nil, accessError(err, fmt.Sprintf("open repository “%s”", r.Name), at)
	}
	repo, err := repository.Open(octx, b, s.index(id), s.master)
	if err != nil {
		defer b.Close()
		if errors.Is(err, repository.ErrNotRepository) {
			return nil, coffer.Errorf(coffer.KindConflict, "repository_not_there",
				"repository “%s” (%s) is gone from %s: its config object is missing", r.Name, id, at).With("location", at).Wrap(err)
		}
		return nil, configError(octx, b, s.master, err)
	}
	if repo.Config().ID != id {
		repo.Close()
		b.Close()
		return nil, coffer.Errorf(coffer.KindConflict, "repository_not_there",
			"%s now holds repository %s, not “%s” (%s)", at, repo.Config().ID, r.Name, id).With("location", at)
	}
	s.openedMu.Lock()
	s.opened[id] = fingerprint(loc)
	s.openedMu.Unlock()
	return repo, nil
}

// Refresh drops the open repositories whose record another replica
// changed (new credentials, an edited endpoint) or deleted since this one
// opened them, so that the next use opens them with their current
// settings — or finds them gone. The replica that makes a change drops its
// own copy at once; Refresh, run with the maintenance, brings the others
// along.
func (s *Service) Refresh(ctx context.Context) error {
	s.openedMu.Lock()
	opened := make(map[string][32]byte, len(s.opened))
	for id, fp := range s.opened {
		opened[id] = fp
	}
	s.openedMu.Unlock()
	if len(opened) == 0 {
		return nil
	}
	all, _, err := s.store.ListRepositories(ctx, metadb.RepositoryFilter{})
	if err != nil {
		return err
	}
	records := coffer.IndexBy(all, func(r *coffer.Repository) string { return r.ID })
	endpoints, _, err := s.store.ListEndpoints(ctx, metadb.EndpointFilter{})
	if err != nil {
		return err
	}
	byID := coffer.IndexBy(endpoints, func(e *coffer.Endpoint) string { return e.ID })
	var errs []error
	for id, fp := range opened {
		r, ok := records[id]
		if !ok {
			s.log.Info("repository deleted on another server: closing it here", "repository_id", id)
			s.forget(id)
			continue
		}
		e := byID[r.EndpointID]
		if r.Kind == coffer.RepositoryS3 && e == nil {
			errs = append(errs, fmt.Errorf("repository %s: its endpoint %s is gone", r.ID, r.EndpointID))
			continue
		}
		loc, err := s.locate(r, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fingerprint(loc) != fp {
			s.log.Info("repository settings changed on another server: reopening it on next use", "repository_id", id)
			s.forget(id)
		}
	}
	return errors.Join(errs...)
}

// fingerprint identifies where and with what credentials loc reaches its
// storage. The credentials go into the hash only: the fingerprint holds no
// secret.
func fingerprint(loc Location) [32]byte {
	var b strings.Builder
	if loc.S3 == nil {
		fmt.Fprintf(&b, "local\x00%s", loc.Path)
	} else {
		c := loc.S3
		fmt.Fprintf(&b, "s3\x00%s\x00%t\x00%s\x00%s\x00%s\x00%s\x00%s\x00%d", c.Endpoint, c.UseTLS, c.Region, c.Bucket,
			c.Prefix, c.AccessKey, c.SecretKey, c.Addressing)
	}
	return sha256.Sum256([]byte(b.String()))
}
