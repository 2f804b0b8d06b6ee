package blob

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpen(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		c := newCodec(t, encrypted)
		for _, plain := range [][]byte{{}, []byte("trailer"), textBytes(5000, 3)} {
			sealed := c.Seal(nil, "pack trailer v1", plain)
			if len(sealed) != len(plain)+c.SealOverhead() {
				t.Fatalf("sealed %d bytes to %d", len(plain), len(sealed))
			}
			got, err := c.Open("pack trailer v1", sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("enc=%v: Open = %q, %v", encrypted, got, err)
			}
			if _, err := c.Open("snapshot v1", sealed); !errors.Is(err, ErrAuth) {
				t.Errorf("enc=%v: opened as another kind: %v", encrypted, err)
			}
			for i := range len(sealed) * 8 {
				bad := append([]byte(nil), sealed...)
				bad[i/8] ^= 1 << (i % 8)
				if _, err := c.Open("pack trailer v1", bad); !errors.Is(err, ErrAuth) {
					t.Fatalf("enc=%v: flipped bit %d not detected", encrypted, i)
				}
			}
			if _, err := c.Open("pack trailer v1", sealed[:len(sealed)-1]); !errors.Is(err, ErrAuth) {
				t.Errorf("enc=%v: truncation not detected", encrypted)
			}
		}
		other, _ := NewCodec(testKeys(encrypted, 42))
		if _, err := other.Open("k", c.Seal(nil, "k", []byte("x"))); !errors.Is(err, ErrAuth) {
			t.Errorf("enc=%v: opened with another key", encrypted)
		}
	}
}
