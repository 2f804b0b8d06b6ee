package memindex_test

import (
	"testing"
	"time"

	"github.com/cofferhq/coffer/internal/engine/repository"
	"github.com/cofferhq/coffer/internal/engine/repository/indextest"
	"github.com/cofferhq/coffer/internal/engine/repository/memindex"
)

func TestConformance(t *testing.T) {
	indextest.Run(t, func(t *testing.T, now func() time.Time) repository.Index {
		return memindex.New(memindex.Options{Now: now})
	})
}
