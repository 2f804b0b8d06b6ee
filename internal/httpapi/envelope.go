package httpapi

import (
	"encoding/base64"
	"encoding/json"

	"github.com/cofferhq/coffer"
)

// Pagination describes one page of a list. In offset mode page and
// total_pages count pages; in cursor mode total and total_pages are -1 and
// cursor fetches the next page.
type Pagination struct {
	Page           int     `json:"page" doc:"Page number, from 1 (always 1 in cursor mode)."`
	PageSize       int     `json:"page_size"`
	Total          int     `json:"total" doc:"Items matching the query in all; -1 in cursor mode."`
	TotalPages     int     `json:"total_pages" doc:"-1 in cursor mode."`
	HasNextPage    bool    `json:"has_next_page"`
	HasPrevPage    bool    `json:"has_prev_page"`
	Cursor         *string `json:"cursor" doc:"Pass as ?cursor= to get the next page (cursor mode); null on the last page and in offset mode."`
	PaginationMode string  `json:"pagination_mode" enum:"offset,cursor"`
}

// Page is the paginated list envelope.
type Page[T any] struct {
	Items      []T        `json:"items"`
	Pagination Pagination `json:"pagination"`
}

// Collection is the envelope of a list that is never paginated.
type Collection[T any] struct {
	Items []T `json:"items"`
	Total int `json:"total"`
}

// CommandResult is the envelope of an action's outcome.
type CommandResult struct {
	Message string `json:"message"`
	Success bool   `json:"success"`
	ID      string `json:"id,omitempty" doc:"The id of the resource the command acted on."`
}

// OffsetParams are the query parameters of an offset-paginated list.
type OffsetParams struct {
	Page     int `query:"page" minimum:"1" default:"1" doc:"Page number, from 1."`
	PageSize int `query:"page_size" minimum:"1" maximum:"500" default:"50" doc:"Items per page."`
}

func (p OffsetParams) offset() int { return (p.Page - 1) * p.PageSize }

// CursorParams are the query parameters of a cursor-paginated list.
type CursorParams struct {
	Cursor   string `query:"cursor" maxLength:"512" doc:"The cursor from the previous page; empty for the first page."`
	PageSize int    `query:"page_size" minimum:"1" maximum:"500" default:"50" doc:"Items per page."`
}

func offsetPage[T any](items []T, p OffsetParams, total int) *Page[T] {
	if items == nil {
		items = []T{}
	}
	pages := (total + p.PageSize - 1) / p.PageSize
	return &Page[T]{Items: items, Pagination: Pagination{
		Page: p.Page, PageSize: p.PageSize, Total: total, TotalPages: pages,
		HasNextPage: p.Page < pages, HasPrevPage: p.Page > 1, PaginationMode: "offset",
	}}
}

func cursorPage[T any](items []T, pageSize int, next *string) *Page[T] {
	if items == nil {
		items = []T{}
	}
	return &Page[T]{Items: items, Pagination: Pagination{
		Page: 1, PageSize: pageSize, Total: -1, TotalPages: -1,
		HasNextPage: next != nil, HasPrevPage: false, Cursor: next, PaginationMode: "cursor",
	}}
}

// encodeCursor and decodeCursor make keyset positions opaque to clients.
func encodeCursor(v any) *string {
	b, _ := json.Marshal(v)
	s := base64.RawURLEncoding.EncodeToString(b)
	return &s
}

func decodeCursor(s string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return coffer.Errorf(coffer.KindInvalid, "invalid_cursor",
			"the cursor is not valid: pass the cursor value of the previous page unchanged").With("field", "query.cursor")
	}
	return nil
}
