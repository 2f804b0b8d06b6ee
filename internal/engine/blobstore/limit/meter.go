package limit

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/time/rate"
)

// meteredReader charges the bytes it reads to a token bucket, after reading
// them, so that the bucket sees exactly what moved.
type meteredReader struct {
	ctx  context.Context
	what string // for messages: "<location>: put <name>"
	r    io.Reader
	lim  *rate.Limiter
}

func (m *meteredReader) Read(p []byte) (int, error) {
	if burst := m.lim.Burst(); len(p) > burst {
		p = p[:burst]
	}
	n, err := m.r.Read(p)
	if n > 0 {
		if werr := waitN(m.ctx, m.lim, n); werr != nil {
			return n, fmt.Errorf("%s: wait for bandwidth: %w", m.what, werr)
		}
	}
	return n, err
}

// meteredSeeker is a meteredReader over a Put's data, which must stay
// seekable so that Put can rewind it.
type meteredSeeker struct {
	meteredReader
	s io.Seeker
}

func (m *meteredSeeker) Seek(offset int64, whence int) (int64, error) {
	return m.s.Seek(offset, whence)
}

// waitN waits until lim allows n more bytes, in steps no larger than the
// burst (WaitN refuses more). A wait that the context's deadline would cut
// short fails at once, matching context.DeadlineExceeded.
func waitN(ctx context.Context, lim *rate.Limiter, n int) error {
	for n > 0 {
		k := min(n, lim.Burst())
		if err := lim.WaitN(ctx, k); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if _, ok := ctx.Deadline(); ok {
				return fmt.Errorf("%v: %w", err, context.DeadlineExceeded)
			}
			return err
		}
		n -= k
	}
	return nil
}
