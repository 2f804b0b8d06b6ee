package s3_test

import (
	"testing"

	"github.com/cofferhq/coffer/internal/engine/blobstore"
	"github.com/cofferhq/coffer/internal/engine/blobstore/s3/s3test"
	"github.com/cofferhq/coffer/internal/engine/blobstore/storetest"
)

// TestConformance runs the backend suite against the test S3 server, each
// case on a fresh bucket, with the smallest part size S3 allows so that the
// suite's larger objects go up as multipart uploads.
func TestConformance(t *testing.T) {
	t.Parallel()
	s3test.Require(t)
	storetest.Run(t, func(t *testing.T) blobstore.Backend { return s3test.Open(t) })
}
