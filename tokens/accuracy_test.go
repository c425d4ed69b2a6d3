package tokens

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tiktoken-go/tokenizer"
)

// TestAccuracy measures the Bytes method against o200k on the corpus, per
// kind of text: the raw estimate, and the estimate once the correction has
// learnt from 20 requests of that kind whose usage reported their o200k
// count. Run with -v to see the table.
func TestAccuracy(t *testing.T) {
	o200k, err := tokenizer.Get(tokenizer.O200kBase)
	if err != nil {
		t.Fatal(err)
	}
	count := func(s string) int64 {
		t.Helper()
		n, err := o200k.Count(s)
		if err != nil {
			t.Fatal(err)
		}
		return int64(n)
	}
	body := func(model, text string) []byte {
		b, err := json.Marshal(map[string]string{"model": model, "input": text})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	pct := func(got, want int64) float64 { return 100 * float64(got-want) / float64(want) }

	var table strings.Builder
	fmt.Fprintf(&table, "%-9s %6s %8s %9s %8s %8s %9s %8s\n", "kind", "bytes", "bytes/tk", "tiktoken", "raw", "raw err", "corrected", "corr err")
	for _, kind := range []struct{ name, file string }{
		{"english", "english.txt"},
		{"german", "german.txt"},
		{"go", "code.go.txt"},
		{"json", "data.json.txt"},
		{"base64", "base64.txt"},
		{"chinese", "chinese.txt"},
		{"japanese", "japanese.txt"},
	} {
		text := MustReadCorpus(t, kind.file)
		e := MustNew(t, Settings{})
		model := "corpus-" + kind.name

		// Learn from 20 different windows of about half the text, as a
		// provider would report their usage.
		for i := range 20 {
			start := runeStart(text, i*len(text)/40)
			end := runeStart(text, start+len(text)/2)
			chunk := text[start:end]
			r, err := e.Parse(body(model, chunk))
			if err != nil {
				t.Fatal(err)
			}
			e.Observe(r.Model, r.RawPrompt, count(chunk))
		}

		r, err := e.Parse(body(model, text))
		if err != nil {
			t.Fatal(err)
		}
		want := count(text)
		rawErr, corrErr := pct(r.RawPrompt, want), pct(r.Prompt, want)
		fmt.Fprintf(&table, "%-9s %6d %8.2f %9d %8d %7.1f%% %9d %7.1f%%\n",
			kind.name, len(text), float64(len(text))/float64(want), want, r.RawPrompt, rawErr, r.Prompt, corrErr)
		if math.Abs(corrErr) > 10 {
			t.Errorf("%s: corrected estimate %d is %.1f%% off the o200k count %d, want within 10%%", kind.name, r.Prompt, corrErr, want)
		}
	}
	t.Logf("Bytes method vs o200k, before and after 20 observations:\n%s", table.String())
}

// runeStart moves i back to the start of the UTF-8 sequence it falls in.
func runeStart(s string, i int) int {
	if i >= len(s) {
		return len(s)
	}
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}
