package apiclient

import (
	"context"
	"net/http"

	"github.com/cofferhq/coffer/internal/protocol"
)

// Plans returns this client's enabled plans, ordered by name (GET
// /agent/plans).
func (c *Client) Plans(ctx context.Context) ([]protocol.AgentPlan, error) {
	var out struct {
		Items []protocol.AgentPlan `json:"items"`
	}
	r := request{method: http.MethodGet, path: "/agent/plans", retry: true}
	if err := c.callJSON(ctx, r, nil, &out); err != nil {
		return nil, err
	}
	if out.Items == nil {
		out.Items = []protocol.AgentPlan{}
	}
	return out.Items, nil
}
