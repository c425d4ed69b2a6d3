package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"sync/atomic"
)

// idSource hands out request ids: 16 hex digits chosen at random when the
// process starts, then a 16-digit counter. Unique within a replica by
// construction and across replicas with overwhelming probability, and cheap
// enough for the hot path (one atomic add, no allocation).
type idSource struct {
	prefix [16]byte
	n      atomic.Uint64
}

func newIDSource() (*idSource, error) {
	var seed [8]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, err
	}
	s := &idSource{}
	hex.Encode(s.prefix[:], seed[:])
	return s, nil
}

// next writes the next id into dst and returns it.
func (s *idSource) next(dst *[32]byte) []byte {
	const digits = "0123456789abcdef"
	copy(dst[:16], s.prefix[:])
	n := s.n.Add(1)
	for i := 31; i >= 16; i-- {
		dst[i] = digits[n&0xf]
		n >>= 4
	}
	return dst[:]
}
