package proxy

import (
	"testing"
	"time"
)

func TestParseMaxWait(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"250ms", 250 * time.Millisecond, true},
		{"30s", 30 * time.Second, true},
		{"1m30s", 90 * time.Second, true},
		{"0", 0, true},
		{"0s", 0, true},
		{"100000h", maxMaxWait, true}, // capped; the class caps it further
		{"", 0, false},
		{"30", 0, false},
		{"-1s", 0, false},
		{"soon", 0, false},
		{"1s ", 0, false},
		{"9999999999999999999h", 0, false},
		{"1000000000000000000000000000000000s", 0, false}, // too long to be sane
	}
	for _, tt := range tests {
		got, err := parseMaxWait([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseMaxWait(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzParseMaxWait checks parseMaxWait against time.ParseDuration: it
// accepts exactly the non-negative durations of sane length, and never
// returns more than its cap.
func FuzzParseMaxWait(f *testing.F) {
	for _, s := range []string{"250ms", "30s", "2m", "1h", "0", "-1s", "30", "1.5s", "1e3s", "∞", "1s1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseMaxWait([]byte(s))
		want, werr := time.ParseDuration(s)
		switch {
		case len(s) > 32:
			if err == nil {
				t.Fatalf("parseMaxWait(%d bytes) accepted an overlong value", len(s))
			}
		case werr != nil || want < 0:
			if err == nil {
				t.Fatalf("parseMaxWait(%q) = %v, want an error (ParseDuration: %v, %v)", s, got, want, werr)
			}
		case err != nil:
			t.Fatalf("parseMaxWait(%q) = %v, want %v", s, err, want)
		case got != min(want, maxMaxWait):
			t.Fatalf("parseMaxWait(%q) = %v, want %v", s, got, min(want, maxMaxWait))
		}
	})
}
