package coffer

import (
	"context"
	"slices"
	"time"
)

// Role is what a user account may do. Roles are ordered: viewer < operator < admin.
type Role string

// The roles.
const (
	RoleViewer   Role = "viewer"   // reads everything they may see
	RoleOperator Role = "operator" // also runs backups and restores
	RoleAdmin    Role = "admin"    // also manages users, storage and commands
)

// Roles lists every role, least privileged first.
var Roles = []Role{RoleViewer, RoleOperator, RoleAdmin}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

// rank orders roles; an unknown role ranks below viewer.
func (r Role) rank() int { return slices.Index(Roles, r) }

// AtLeast reports whether r is at least as privileged as other.
func (r Role) AtLeast(other Role) bool { return r.Valid() && r.rank() >= other.rank() }

// Permission is what one route requires. A role grants a set of
// permissions; an API token may be narrowed to a subset with scopes.
type Permission string

// The permissions.
const (
	PermRead    Permission = "read"    // see resources
	PermOperate Permission = "operate" // run backups, restores, enrollments
	PermManage  Permission = "manage"  // users, storage, plan commands, server settings
	// PermAgent is held only by agent credentials, and is the only
	// permission they hold: the /api/v1/agent/... routes require it.
	PermAgent Permission = "agent"
)

// Permissions lists every permission in the order roles gain them.
var Permissions = []Permission{PermRead, PermOperate, PermManage}

// Valid reports whether p is one of the defined permissions.
func (p Permission) Valid() bool { return slices.Contains(Permissions, p) }

// Permissions returns what the role grants.
func (r Role) Permissions() []Permission {
	switch r {
	case RoleAdmin:
		return []Permission{PermRead, PermOperate, PermManage}
	case RoleOperator:
		return []Permission{PermRead, PermOperate}
	case RoleViewer:
		return []Permission{PermRead}
	}
	return nil
}

// PrincipalKind says which kind of credential a request carried.
type PrincipalKind string

// The principal kinds.
const (
	PrincipalSession  PrincipalKind = "session"   // a login (bearer token or browser cookie)
	PrincipalAPIToken PrincipalKind = "api_token" // a personal access token
	PrincipalAgent    PrincipalKind = "agent"     // an enrolled client's agent (or the CLI on that machine)
)

// Principal is the authenticated caller of one request.
type Principal struct {
	Kind     PrincipalKind
	UserID   string
	Username string
	Role     Role
	// Scopes is what this credential may do: the role's permissions,
	// narrowed by an API token's scopes.
	Scopes []Permission
	// CredentialID is the session or API token id, so a session can be
	// told apart from the user's other sessions (e.g. to keep it on a
	// password change).
	CredentialID string
	// ClientID is the enrolled client of an agent credential ("" for
	// users): agent routes serve only that client's data.
	ClientID string
}

// Can reports whether the principal holds permission p.
func (p *Principal) Can(perm Permission) bool {
	return p != nil && slices.Contains(p.Scopes, perm)
}

// MayOperate reports, as an error, whether the principal may act on client
// c: run its backups and plans, restore from or onto it, browse its live
// file system or download its files. Admins (principals holding manage) may
// act on every client; operators only on the clients they own. Anyone else
// — viewers, a read-only token, another client's agent — gets
// coffer.KindForbidden: "operate_required" without the operate permission,
// "client_not_owned" for an operator's client that is not theirs.
func (p *Principal) MayOperate(c *Client) error {
	switch {
	case p.Can(PermManage):
		return nil
	case !p.Can(PermOperate):
		return Errorf(KindForbidden, "operate_required",
			"acting on client %s needs the operate permission (an operator or admin account)", c.Name)
	case c.OwnerID != "" && c.OwnerID == p.UserID:
		return nil
	default:
		return Errorf(KindForbidden, "client_not_owned",
			"client %s belongs to another user: only its owner or an admin may act on it (an admin can make you its owner)", c.Name).
			With("client_id", c.ID)
	}
}

// ClientGetter reads a client by id: the services' client stores.
type ClientGetter interface {
	GetClient(ctx context.Context, id string) (*Client, error)
}

// MayOperateClient is MayOperate for the client with id, read from clients.
// A client that no longer exists is owned by no one (its backups and
// restores stay), so only admins may act on its records.
func MayOperateClient(ctx context.Context, clients ClientGetter, p *Principal, id string) error {
	c, err := clients.GetClient(ctx, id)
	if IsKind(err, KindNotFound) {
		c, err = &Client{ID: id, Name: id}, nil
	}
	if err != nil {
		return err
	}
	return p.MayOperate(c)
}

// User is an account.
type User struct {
	ID                string
	Username          string
	Role              Role
	Disabled          bool
	PasswordHash      string // argon2id PHC string; never leaves the server
	CreatedAt         time.Time
	UpdatedAt         time.Time
	PasswordChangedAt time.Time
	LastLoginAt       *time.Time
}

// Session is a login: a bearer token and, for browsers, the same token in a cookie.
type Session struct {
	ID         string
	UserID     string
	TokenHash  string
	CreatedAt  time.Time
	ExpiresAt  time.Time
	LastSeenAt time.Time
	UserAgent  string
	RemoteIP   string
}

// APIToken is a personal access token for scripts. Its secret is shown once
// at creation; only its SHA-256 is stored.
type APIToken struct {
	ID         string
	UserID     string
	Name       string
	Prefix     string // the first characters of the secret, to recognise it in lists
	TokenHash  string
	Scopes     []Permission
	CreatedAt  time.Time
	ExpiresAt  *time.Time
	LastUsedAt *time.Time
}
