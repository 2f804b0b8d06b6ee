package coffer

import "testing"

func TestMayOperate(t *testing.T) {
	owned := &Client{ID: "c1", Name: "web-1", OwnerID: "u-op"}
	unowned := &Client{ID: "c2", Name: "db-1"}
	principal := func(userID string, role Role) *Principal {
		return &Principal{Kind: PrincipalSession, UserID: userID, Role: role, Scopes: role.Permissions()}
	}
	for _, tc := range []struct {
		name string
		p    *Principal
		c    *Client
		want string
	}{
		{"admin, any client", principal("u-admin", RoleAdmin), unowned, ""},
		{"operator, own client", principal("u-op", RoleOperator), owned, ""},
		{"operator, another's client", principal("u-other", RoleOperator), owned, "client_not_owned"},
		{"operator, ownerless client", principal("u-op", RoleOperator), unowned, "client_not_owned"},
		{"viewer, even its own", principal("u-op", RoleViewer), owned, "operate_required"},
		{"read-only token of an admin", &Principal{Kind: PrincipalAPIToken, UserID: "u-admin", Role: RoleAdmin,
			Scopes: []Permission{PermRead}}, owned, "operate_required"},
		{"an agent", &Principal{Kind: PrincipalAgent, ClientID: "c1", Scopes: []Permission{PermAgent}}, owned, "operate_required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.MayOperate(tc.c)
			if got := ErrorCode(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
				t.Fatalf("MayOperate = %v (code %q), want %q", err, got, tc.want)
			}
			if err != nil && !IsKind(err, KindForbidden) {
				t.Fatalf("kind of %v is not forbidden", err)
			}
		})
	}
}
