package chunker

import (
	"fmt"

	"github.com/cofferhq/coffer"
)

// Bounds that Validate enforces on repository chunker parameters.
const (
	// MinSizeFloor is the smallest Params.Min a repository may use. Every
	// chunk is a row in the metadata index and an entry in a pack trailer;
	// smaller chunks would buy little extra dedup for a much larger index.
	MinSizeFloor = 64 << 10
	// MaxSizeCeiling is the largest Params.Max a repository may use: a chunk
	// must fit in one pack (16 MiB target), and every running chunker holds
	// a buffer of 2×Max.
	MaxSizeCeiling = 16 << 20
)

// libraryMinSize is the smallest Min the underlying FastCDC accepts. Only
// tests use parameters below MinSizeFloor.
const libraryMinSize = 64

// Params are the FastCDC parameters of a repository, in bytes: every chunk
// but a stream's last is at least Min and at most Max long, and chunks are
// Avg long on average (a little more, since no chunk is shorter than Min).
//
// Params are stored in the repository config when the repository is created
// and must never change for that repository: a chunk's boundaries depend on
// them, so different parameters would cut the same file differently and
// nothing new would deduplicate against what is already stored. For the same
// reason the boundaries that given Params produce for given input are part of
// the repository format and must stay the same across versions of Coffer
// (TestGoldenBoundaries freezes them).
type Params struct {
	Min int `json:"min"`
	Avg int `json:"avg"`
	Max int `json:"max"`
}

// DefaultParams returns the parameters of new repositories: min 256 KiB,
// avg 1 MiB, max 4 MiB.
func DefaultParams() Params {
	return Params{Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}
}

// String returns the parameters as "min/avg/max" in bytes.
func (p Params) String() string {
	return fmt.Sprintf("%d/%d/%d", p.Min, p.Avg, p.Max)
}

// Validate reports whether p may be used for a repository: Min, Avg and Max
// are powers of two with MinSizeFloor ≤ Min < Avg < Max ≤ MaxSizeCeiling.
//
// FastCDC derives its cut masks from log2(Avg), so Avg must be a power of two;
// Min and Max need not be for the algorithm, but requiring it keeps the set of
// possible repository configurations small and can be relaxed later without
// breaking existing repositories, whereas a tightening could not. The error is
// a *coffer.Error of kind KindInvalid with code "invalid_chunker_params".
func (p Params) Validate() error {
	if err := p.validShape(); err != nil {
		return err
	}
	if p.Min < MinSizeFloor {
		return invalid(p, "min must be at least %d bytes", MinSizeFloor)
	}
	if p.Max > MaxSizeCeiling {
		return invalid(p, "max must be at most %d bytes", MaxSizeCeiling)
	}
	return nil
}

// validShape checks what the algorithm itself needs, without the repository
// bounds, so that tests and the fuzz target can use small parameters.
func (p Params) validShape() error {
	for _, v := range []struct {
		name string
		n    int
	}{{"min", p.Min}, {"avg", p.Avg}, {"max", p.Max}} {
		if v.n < libraryMinSize || v.n&(v.n-1) != 0 {
			return invalid(p, "%s must be a power of two of at least %d bytes", v.name, libraryMinSize)
		}
	}
	if !(p.Min < p.Avg && p.Avg < p.Max) {
		return invalid(p, "sizes must satisfy min < avg < max")
	}
	return nil
}

func invalid(p Params, format string, args ...any) error {
	return coffer.Errorf(coffer.KindInvalid, "invalid_chunker_params",
		"chunker params %s: "+format, append([]any{p}, args...)...).
		With("min", p.Min).With("avg", p.Avg).With("max", p.Max)
}
