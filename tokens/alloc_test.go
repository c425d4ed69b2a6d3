//go:build !race

package tokens

import "testing"

// The race detector allocates on its own, so these run without it.

func TestAllocs(t *testing.T) {
	body := chatBody(t)
	e := MustNew(t, Settings{})
	embeddings := embeddingsResponse(1 << 20)
	stream := chatStream(20)
	reads := [][]byte{stream[:len(stream)/3], stream[len(stream)/3:]}
	var s Stream
	out := make([]byte, 0, 2*len(stream))
	forced := make([]byte, 0, 2*len(body))

	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"Parse bytes", func() {
			if _, err := e.Parse(body); err != nil {
				t.Fatal(err)
			}
		}},
		{"ResponseUsage", func() {
			if _, ok := ResponseUsage(embeddings); !ok {
				t.Fatal("no usage")
			}
		}},
		{"ForceIncludeUsage", func() {
			var err error
			if forced, err = ForceIncludeUsage(forced[:0], body); err != nil {
				t.Fatal(err)
			}
		}},
		{"Stream.Observe", func() {
			s.Reset(false)
			for _, r := range reads {
				s.Observe(r)
			}
		}},
		{"Stream.Filter", func() {
			s.Reset(true)
			for _, r := range reads {
				out = s.Filter(out[:0], r)
			}
			out = s.Flush(out)
		}},
	} {
		if got := testing.AllocsPerRun(100, tt.f); got != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tt.name, got)
		}
	}
}
