package tokens

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// chatBody returns a Chat Completions request of about 4 KiB: a system
// prompt, a conversation in English and German with a code sample, an
// image, and one tool.
func chatBody(tb testing.TB) []byte {
	tb.Helper()
	english := MustReadCorpus(tb, "english.txt")
	german := MustReadCorpus(tb, "german.txt")
	code := MustReadCorpus(tb, "code.go.txt")
	req := map[string]any{
		"model":      "gpt-4o-mini",
		"max_tokens": 512,
		"stream":     true,
		"messages": []any{
			map[string]any{"role": "system", "content": "You are a careful assistant. Answer in the language of the question."},
			map[string]any{"role": "user", "content": english[:runeStart(english, 1200)]},
			map[string]any{"role": "assistant", "content": german[:runeStart(german, 900)]},
			map[string]any{"role": "user", "content": []any{
				map[string]any{"type": "text", "text": "Review this code:\n" + code[:runeStart(code, 1100)]},
				map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/diagram.png"}},
			}},
		},
		"tools": []any{map[string]any{"type": "function", "function": map[string]any{
			"name": "search_docs", "description": "Search the documentation.",
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"query": map[string]any{"type": "string"}}, "required": []string{"query"}},
		}}},
	}
	b, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// MustReadCorpus returns testdata/corpus/name.
func MustReadCorpus(tb testing.TB, name string) string {
	tb.Helper()
	b, err := os.ReadFile("testdata/corpus/" + name)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// chatStream returns a chat stream of n content chunks and its usage chunk.
func chatStream(n int) []byte {
	var b strings.Builder
	b.WriteString(chatEvents[0])
	for range n {
		b.WriteString(chatEvents[1])
	}
	b.WriteString(chatEvents[3])
	b.WriteString(chatEvents[chatUsageEvent])
	b.WriteString(chatEvents[5])
	return []byte(b.String())
}

func BenchmarkParse(b *testing.B) {
	body := chatBody(b)
	for _, m := range []Method{Bytes, Tiktoken} {
		b.Run(m.String(), func(b *testing.B) {
			e := MustNew(b, Settings{Method: m})
			if _, err := e.Parse(body); err != nil { // loads the vocabulary
				b.Fatal(err)
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Parse(body); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(body))/1024), "ns/KiB")
		})
	}
}

func BenchmarkParseParallel(b *testing.B) {
	body := chatBody(b)
	e := MustNew(b, Settings{})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Parse(body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkResponseUsage(b *testing.B) {
	body := embeddingsResponse(1 << 20)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ResponseUsage(body); !ok {
			b.Fatal("no usage")
		}
	}
}

func BenchmarkForceIncludeUsage(b *testing.B) {
	body := chatBody(b)
	dst := make([]byte, 0, 2*len(body))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if dst, err = ForceIncludeUsage(dst[:0], body); err != nil {
			b.Fatal(err)
		}
	}
}

// streamReads splits a stream into reads of the relay's 16 KiB.
func streamReads(stream []byte) [][]byte {
	var reads [][]byte
	for i := 0; i < len(stream); i += 16 << 10 {
		reads = append(reads, stream[i:min(i+16<<10, len(stream))])
	}
	return reads
}

func BenchmarkStreamObserve(b *testing.B) {
	stream := chatStream(200)
	reads := streamReads(stream)
	var s Stream
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		s.Reset(false)
		for _, r := range reads {
			s.Observe(r)
		}
		if _, ok := s.Usage(); !ok {
			b.Fatal("no usage")
		}
	}
}

func BenchmarkStreamFilter(b *testing.B) {
	stream := chatStream(200)
	reads := streamReads(stream)
	var s Stream
	out := make([]byte, 0, 32<<10)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		s.Reset(true)
		for _, r := range reads {
			out = s.Filter(out[:0], r)
		}
		out = s.Flush(out[:0])
		if _, ok := s.Usage(); !ok {
			b.Fatal("no usage")
		}
	}
}
