package benchcorpus

import (
	"os"
	"testing"
)

func TestZZMutate(t *testing.T) {
	dir := os.Getenv("ZZ_DIR")
	if dir == "" {
		t.Skip()
	}
	if err := Mutate(dir, 1, 1); err != nil {
		t.Fatal(err)
	}
}
