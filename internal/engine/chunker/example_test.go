package chunker_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand/v2"

	"github.com/cofferhq/coffer/internal/engine/chunker"
)

func Example() {
	data := make([]byte, 20<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}

	c, err := chunker.New(bytes.NewReader(data), chunker.DefaultParams())
	if err != nil {
		log.Fatal(err)
	}
	var chunks, total int
	for {
		chunk, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		// chunk is valid until the next call to Next: hash it, or copy it
		// before handing it to another goroutine.
		chunks++
		total += len(chunk)
	}
	fmt.Println(chunks > 10, total == len(data))
	// Output: true true
}
