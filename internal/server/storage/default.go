package storage

import (
	"context"
	"fmt"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3"
	"github.com/cofferhq/coffer/internal/metadb"
)

// EnsureDefault records the server's default repository — opened at start
// from loc (--repository-dir, or --repository-url with credentials from
// the environment) — when it has no record yet, and makes it the default
// one. An S3 default gets an endpoint for its server, reusing a matching
// one. Its stored credentials follow the environment's. Several replicas
// may call it at once.
func (s *Service) EnsureDefault(ctx context.Context, loc Location) (*coffer.Repository, error) {
	def := s.set.Default()
	cfg := def.Config()
	r, err := s.store.GetRepository(ctx, cfg.ID)
	switch {
	case coffer.IsKind(err, coffer.KindNotFound):
		if r, err = s.recordDefault(ctx, loc); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	case loc.S3 != nil:
		if err := s.followCredentials(ctx, r, loc.S3); err != nil {
			return nil, err
		}
	}
	if !r.IsDefault {
		if err := s.store.SetDefaultRepository(ctx, r.ID); err != nil {
			return nil, err
		}
		r.IsDefault = true
	}
	return r, nil
}

// recordDefault creates the default repository's record.
func (s *Service) recordDefault(ctx context.Context, loc Location) (*coffer.Repository, error) {
	cfg := s.set.Default().Config()
	r := &coffer.Repository{ID: cfg.ID, Name: "Default", Kind: coffer.RepositoryLocal, Path: loc.Path, Encrypted: cfg.Encrypted,
		Chunker: chunkerOf(cfg)}
	var e *coffer.Endpoint
	if loc.S3 != nil {
		var err error
		if e, err = s.endpointFor(ctx, loc.S3); err != nil {
			return nil, err
		}
		r.Kind, r.Path, r.EndpointID, r.Bucket = coffer.RepositoryS3, "", e.ID, loc.S3.Bucket
		if r.Prefix, err = cleanPrefix(loc.S3.Prefix); err != nil {
			return nil, err
		}
		if r.Credentials, err = s.sealer.seal(r.ID, Credentials{AccessKey: loc.S3.AccessKey, SecretKey: loc.S3.SecretKey}); err != nil {
			return nil, err
		}
	}
	err := s.store.CreateRepository(ctx, r)
	if coffer.ErrorCode(err) == "repository_name_taken" {
		r.Name = "Default " + cfg.ID[:8]
		err = s.store.CreateRepository(ctx, r)
	}
	if coffer.ErrorCode(err) == "repository_exists" { // another replica recorded it first
		return s.store.GetRepository(ctx, cfg.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("record the default repository: %w", err)
	}
	s.audit(ctx, nil, repoRef(r.ID), coffer.LevelInfo, EventCreated, "Repository created",
		fmt.Sprintf("The server recorded its default repository “%s” (%s) at %s, encryption %s.", r.Name, r.ID, where(r, e), onOff(r.Encrypted)))
	return r, nil
}

// followCredentials stores the default S3 repository's credentials when
// the environment's differ from the stored ones.
func (s *Service) followCredentials(ctx context.Context, r *coffer.Repository, cfg *s3.Config) error {
	env := Credentials{AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey}
	if stored, err := s.sealer.open(r.ID, r.Credentials); err == nil && stored == env {
		return nil
	}
	sealed, err := s.sealer.seal(r.ID, env)
	if err != nil {
		return err
	}
	r.Credentials = sealed
	if err := s.store.UpdateRepository(ctx, r); err != nil {
		return fmt.Errorf("store the default repository's credentials: %w", err)
	}
	s.audit(ctx, nil, repoRef(r.ID), coffer.LevelInfo, EventUpdated, "Repository updated",
		fmt.Sprintf("The server stored the credentials of its default repository “%s” (%s) from its environment.", r.Name, r.ID))
	return nil
}

// endpointFor returns the endpoint of the S3 server cfg names, creating
// one when none matches.
func (s *Service) endpointFor(ctx context.Context, cfg *s3.Config) (*coffer.Endpoint, error) {
	addressing := coffer.AddressingPath
	if cfg.Addressing == s3.AddressingVirtualHost {
		addressing = coffer.AddressingVirtual
	}
	for attempt := 0; ; attempt++ {
		all, _, err := s.store.ListEndpoints(ctx, metadb.EndpointFilter{})
		if err != nil {
			return nil, err
		}
		for i := range all {
			e := &all[i]
			if e.URL == cfg.Endpoint && e.HTTPS == cfg.UseTLS && e.Region == cfg.Region && e.Addressing == addressing {
				return e, nil
			}
		}
		e := &coffer.Endpoint{DisplayName: cfg.Endpoint, URL: cfg.Endpoint, HTTPS: cfg.UseTLS, Type: coffer.EndpointS3,
			Region: cfg.Region, Addressing: addressing}
		if attempt > 0 {
			e.DisplayName = fmt.Sprintf("%s (%d)", cfg.Endpoint, attempt+1)
		}
		err = s.store.CreateEndpoint(ctx, e)
		if err == nil {
			s.audit(ctx, nil, endpointRef(e.ID), coffer.LevelInfo, EventEndpointCreated, "Storage endpoint created",
				fmt.Sprintf("The server created %s for its default repository.", describeEndpoint(e)))
			return e, nil
		}
		if coffer.ErrorCode(err) != "endpoint_name_taken" || attempt >= 3 {
			return nil, err
		}
		// Another replica made it meanwhile, or the name is in use: look again.
	}
}
