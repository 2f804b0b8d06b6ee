package blob

import (
	"bytes"
	"errors"
	"testing"
)

// TestPayloadPath checks the agent's path: the agent compresses with only
// the id key, the server checks the payload and seals it, and Decode of the
// sealed blob gives the plaintext back, as if Encode had made it.
func TestPayloadPath(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		server := newCodec(t, encrypted)
		agentKeys := testKeys(false, 7)
		agentKeys.DataKey = [32]byte{}
		agent, err := NewCodec(agentKeys)
		if err != nil {
			t.Fatal(err)
		}
		defer agent.Close()
		for name, plain := range map[string][]byte{"empty": {}, "text": textBytes(64<<10, 5), "random": randomBytes(64<<10, 6)} {
			id := agent.ID(plain)
			if id != server.ID(plain) {
				t.Fatalf("%s: agent and server ids differ", name)
			}
			payload, err := agent.Compress(nil, plain, Fastest)
			if err != nil {
				t.Fatal(err)
			}
			if len(payload) > len(plain) {
				t.Fatalf("%s: payload %d bytes for %d of plaintext", name, len(payload), len(plain))
			}
			got, err := server.DecodePayload(nil, Data, id, payload, len(plain))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%s: DecodePayload = %v", name, err)
			}
			stored := server.SealPayload(nil, Data, id, payload)
			got, err = server.Decode(nil, Data, id, stored, len(plain))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%s encrypted=%v: Decode(SealPayload) = %v", name, encrypted, err)
			}
			opened, err := server.OpenPayload(nil, Data, id, stored)
			if err != nil || !bytes.Equal(opened, payload) {
				t.Fatalf("%s: OpenPayload = %v", name, err)
			}
			if encrypted {
				if _, err := server.OpenPayload(nil, Tree, id, stored); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: OpenPayload as a tree = %v, want ErrCorrupt", name, err)
				}
			}
		}
	}
}

// TestDecodePayloadRefusesLies covers what a hostile agent could send: a
// payload for another id, a wrong length, garbage that claims compression.
func TestDecodePayloadRefusesLies(t *testing.T) {
	c := newCodec(t, false)
	plain := textBytes(32<<10, 9)
	payload, _ := c.Compress(nil, plain, Default)
	other := c.ID([]byte("something else"))
	cases := map[string]func() error{
		"wrong id":      func() error { _, err := c.DecodePayload(nil, Data, other, payload, len(plain)); return err },
		"wrong type":    func() error { _, err := c.DecodePayload(nil, Tree, c.ID(plain), payload, len(plain)); return err },
		"short raw len": func() error { _, err := c.DecodePayload(nil, Data, c.ID(plain), payload, len(plain)-1); return err },
		"long raw len":  func() error { _, err := c.DecodePayload(nil, Data, c.ID(plain), payload, len(plain)+1); return err },
		"garbage": func() error {
			_, err := c.DecodePayload(nil, Data, c.ID(plain), []byte("not zstd"), len(plain))
			return err
		},
		"too large": func() error { _, err := c.DecodePayload(nil, Data, c.ID(plain), payload, MaxSize+1); return err },
	}
	for name, f := range cases {
		if err := f(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}
