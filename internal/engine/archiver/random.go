package archiver

import "math"

// looksRandom reports whether data's bytes look uniformly random, judged
// from the byte histogram of a sample: such chunks (compressed media,
// archives, encrypted files) do not compress, so trying costs time for
// nothing. The sample is a few windows spread over the chunk.
func looksRandom(data []byte) bool {
	const window, windows = 1 << 10, 8
	var hist [256]uint32
	n := 0
	if len(data) <= window*windows {
		for _, c := range data {
			hist[c]++
		}
		n = len(data)
	} else {
		step := (len(data) - window) / (windows - 1)
		for i := range windows {
			for _, c := range data[i*step : i*step+window] {
				hist[c]++
			}
		}
		n = window * windows
	}
	if n < 1024 {
		return false
	}
	var entropy float64
	for _, c := range hist {
		if c > 0 {
			p := float64(c) / float64(n)
			entropy -= p * math.Log2(p)
		}
	}
	return entropy > randomEntropy
}

// randomEntropy is the bits per byte above which a sample counts as random:
// a sample of 8 KiB of uniform bytes measures about 7.98.
const randomEntropy = 7.9
