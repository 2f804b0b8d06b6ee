package storage

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cofferhq/coffer"
	"github.com/cofferhq/coffer/internal/metadb"
)

// Limits on names.
const (
	MaxNameLen   = 100 // characters, of endpoints and repositories
	MaxRegionLen = 64
)

// EndpointSpec is what a person says about an endpoint when creating or
// replacing it.
type EndpointSpec struct {
	DisplayName string
	URL         string // host[:port]
	HTTPS       bool
	Type        coffer.EndpointType // "" = s3
	Region      string
	Addressing  coffer.Addressing // "" = virtual for aws, path otherwise
}

func invalid(field, code, format string, args ...any) *coffer.Error {
	return coffer.Errorf(coffer.KindInvalid, code, format, args...).With("field", "body."+field)
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0
}

func validateName(field, what, name string) error {
	switch n := utf8.RuneCountInString(name); {
	case strings.TrimSpace(name) == "":
		return invalid(field, "invalid_name", "the %s needs a name", what)
	case n > MaxNameLen:
		return invalid(field, "invalid_name", "the name has %d characters; the limit is %d", n, MaxNameLen).With("limit", MaxNameLen)
	case !utf8.ValidString(name) || hasControl(name):
		return invalid(field, "invalid_name", "the name contains control characters or invalid UTF-8")
	}
	return nil
}

// validateEndpointURL checks a host[:port].
func validateEndpointURL(raw string) error {
	bad := func(why string) error {
		return invalid("url", "invalid_endpoint_url", "url %q %s", truncate(raw), why)
	}
	if raw == "" {
		return bad("is empty: give the server's host[:port], e.g. s3.example.com or 10.0.0.5:9000")
	}
	if strings.Contains(raw, "://") {
		return bad("has a scheme: give host[:port] alone and set https to choose between https and http")
	}
	if len(raw) > 255 || strings.ContainsAny(raw, "/?#@ \t") || hasControl(raw) {
		return bad("is not a host[:port]: no path, query, user or spaces")
	}
	u, err := url.Parse("//" + raw)
	if err != nil || u.Host != raw || u.Hostname() == "" {
		return bad("is not a host[:port]")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("has a port outside 1 to 65535")
		}
	} else if strings.HasSuffix(raw, ":") {
		return bad("ends in a colon without a port")
	}
	return nil
}

// validateEndpoint checks spec and fills in its defaults.
func validateEndpoint(spec *EndpointSpec) error {
	if err := validateName("display_name", "endpoint", spec.DisplayName); err != nil {
		return err
	}
	spec.URL = strings.TrimSpace(spec.URL)
	if err := validateEndpointURL(spec.URL); err != nil {
		return err
	}
	if spec.Type == "" {
		spec.Type = coffer.EndpointS3
	}
	if !slices.Contains(coffer.EndpointTypes, spec.Type) {
		return invalid("type", "invalid_endpoint_type", "type %q is not one of s3, ceph, minio, aws", truncate(string(spec.Type)))
	}
	if spec.Addressing == "" {
		spec.Addressing = coffer.AddressingPath
		if spec.Type == coffer.EndpointAWS {
			spec.Addressing = coffer.AddressingVirtual
		}
	}
	if spec.Addressing != coffer.AddressingPath && spec.Addressing != coffer.AddressingVirtual {
		return invalid("addressing", "invalid_addressing", "addressing %q is not path or virtual", truncate(string(spec.Addressing)))
	}
	if len(spec.Region) > MaxRegionLen || strings.ContainsAny(spec.Region, " /") || hasControl(spec.Region) {
		return invalid("region", "invalid_region", "region %q is not a region name like us-east-1", truncate(spec.Region))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}

// describeEndpoint names an endpoint in event messages.
func describeEndpoint(e *coffer.Endpoint) string {
	return fmt.Sprintf("endpoint “%s” (%s, %s://%s)", e.DisplayName, e.Type, scheme(e), e.URL)
}

// scheme is how endpoint e is spoken to: https or http.
func scheme(e *coffer.Endpoint) string {
	if e.HTTPS {
		return "https"
	}
	return "http"
}

// CreateEndpoint validates spec and stores it as a new endpoint. It does
// not contact the server: an endpoint holds no credentials, so its
// repositories test it when they are created.
func (s *Service) CreateEndpoint(ctx context.Context, p *coffer.Principal, spec EndpointSpec) (*coffer.Endpoint, error) {
	if err := validateEndpoint(&spec); err != nil {
		return nil, err
	}
	e := &coffer.Endpoint{DisplayName: spec.DisplayName, URL: spec.URL, HTTPS: spec.HTTPS, Type: spec.Type, Region: spec.Region,
		Addressing: spec.Addressing}
	if err := s.store.CreateEndpoint(ctx, e); err != nil {
		return nil, err
	}
	s.audit(ctx, p, endpointRef(e.ID), coffer.LevelInfo, EventEndpointCreated, "Storage endpoint created",
		fmt.Sprintf("%s created %s.", actorName(p), describeEndpoint(e)))
	return e, nil
}

// GetEndpoint returns endpoint id.
func (s *Service) GetEndpoint(ctx context.Context, id string) (*coffer.Endpoint, error) {
	return s.store.GetEndpoint(ctx, id)
}

// ListEndpoints returns a page of endpoints and how many there are.
func (s *Service) ListEndpoints(ctx context.Context, f metadb.EndpointFilter) ([]coffer.Endpoint, int, error) {
	return s.store.ListEndpoints(ctx, f)
}

// UpdateEndpoint replaces endpoint id with spec. When the way to reach the
// server changes (url, https, region, addressing), every repository on it
// must still be reached with its credentials and still hold the same
// repository, or nothing changes; afterwards they are reopened with the
// new settings.
func (s *Service) UpdateEndpoint(ctx context.Context, p *coffer.Principal, id string, spec EndpointSpec) (*coffer.Endpoint, error) {
	if err := validateEndpoint(&spec); err != nil {
		return nil, err
	}
	old, err := s.store.GetEndpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	e := *old
	e.DisplayName, e.URL, e.HTTPS, e.Type, e.Region, e.Addressing = spec.DisplayName, spec.URL, spec.HTTPS, spec.Type, spec.Region, spec.Addressing
	moved := e.URL != old.URL || e.HTTPS != old.HTTPS || e.Region != old.Region || e.Addressing != old.Addressing
	var onIt []coffer.Repository
	if moved {
		onIt, _, err = s.store.ListRepositories(ctx, metadb.RepositoryFilter{EndpointID: id})
		if err != nil {
			return nil, err
		}
		for i := range onIt {
			if err := s.recheck(ctx, &onIt[i], &e, nil); err != nil {
				var ce *coffer.Error
				if asCoffer(err, &ce) {
					return nil, ce.With("repository_id", onIt[i].ID)
				}
				return nil, err
			}
		}
	}
	if err := s.store.UpdateEndpoint(ctx, &e); err != nil {
		return nil, err
	}
	for i := range onIt {
		s.forget(onIt[i].ID)
	}
	msg := fmt.Sprintf("%s updated %s.", actorName(p), describeEndpoint(&e))
	if moved {
		msg += fmt.Sprintf(" Its address changed; its %d repositories were reached at the new one and will be reopened.", len(onIt))
	}
	s.audit(ctx, p, endpointRef(e.ID), coffer.LevelInfo, EventEndpointUpdated, "Storage endpoint updated", msg)
	return &e, nil
}

// DeleteEndpoint deletes endpoint id; it is refused ("endpoint_in_use")
// while repositories live on it.
func (s *Service) DeleteEndpoint(ctx context.Context, p *coffer.Principal, id string) (*coffer.Endpoint, error) {
	e, err := s.store.DeleteEndpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	s.audit(ctx, p, endpointRef(e.ID), coffer.LevelInfo, EventEndpointDeleted, "Storage endpoint deleted",
		fmt.Sprintf("%s deleted %s.", actorName(p), describeEndpoint(e)))
	return e, nil
}
