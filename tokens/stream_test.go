package tokens

import (
	"bytes"
	"strings"
	"testing"
)

// Real-shaped streams, one event per element, each ending with its blank
// line.
var (
	chatChunk = `{"id":"chatcmpl-C1","object":"chat.completion.chunk","created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0392822090",`

	chatEvents = []string{
		"data: " + chatChunk + `"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n",
		"data: " + chatChunk + `"choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n",
		"data: " + chatChunk + `"choices":[{"index":0,"delta":{"content":"! \"usage\": {}"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n",
		"data: " + chatChunk + `"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n",
		"data: " + chatChunk + `"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}` + "\n\n",
		"data: [DONE]\n\n",
	}
	chatUsageEvent = 4

	// An Azure OpenAI stream starts with a chunk that has no choices and
	// no usage: it must pass.
	azureEvents = []string{
		`data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}` + "\n\n",
		`data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null,"index":0}],"created":1,"id":"chatcmpl-A","model":"gpt-4o","object":"chat.completion.chunk","usage":null}` + "\n\n",
		`data: {"choices":[],"created":1,"id":"chatcmpl-A","model":"gpt-4o","object":"chat.completion.chunk","usage":{"completion_tokens":1,"prompt_tokens":8,"total_tokens":9}}` + "\n\n",
		"data: [DONE]\n\n",
	}
	azureUsageEvent = 2

	completionsEvents = []string{
		`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":"This","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}` + "\n\n",
		`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[{"text":" is","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}` + "\n\n",
		`data: {"id":"cmpl-1","object":"text_completion","created":1,"choices":[],"model":"gpt-3.5-turbo-instruct","usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}` + "\n\n",
		"data: [DONE]\n\n",
	}

	anthropicEvents = []string{
		"event: message_start\n" + `data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":5,"cache_read_input_tokens":100,"output_tokens":1}}}` + "\n\n",
		"event: content_block_start\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n",
		"event: ping\n" + `data: {"type": "ping"}` + "\n\n",
		"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n",
		"event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}` + "\n\n",
		"event: content_block_stop\n" + `data: {"type":"content_block_stop","index":0}` + "\n\n",
		"event: message_delta\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}` + "\n\n",
		"event: message_stop\n" + `data: {"type":"message_stop"}` + "\n\n",
	}

	responsesEvents = []string{
		"event: response.created\n" + `data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"in_progress","error":null,"instructions":"You are a helpful assistant.","model":"gpt-4.1-2025-04-14","output":[],"usage":null,"user":null,"metadata":{}}}` + "\n\n",
		"event: response.output_item.added\n" + `data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","role":"assistant","content":[]}}` + "\n\n",
		"event: response.output_text.delta\n" + `data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}` + "\n\n",
		"event: response.output_text.delta\n" + `data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" there"}` + "\n\n",
		"event: response.output_text.done\n" + `data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_1","output_index":0,"content_index":0,"text":"Hi there"}` + "\n\n",
		"event: response.completed\n" + `data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","object":"response","created_at":1741290958,"status":"completed","error":null,"model":"gpt-4.1-2025-04-14","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hi there","annotations":[]}]}],"usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}` + "\n\n",
	}
)

type streamCase struct {
	name      string
	events    []string
	usageOnly int // index of the event Filter strips; -1 for none
	want      Usage
	wantOK    bool
	deltas    int64
}

func streamCases() []streamCase {
	return []streamCase{
		{"chat", chatEvents, chatUsageEvent, Usage{9, 2}, true, 2},
		{"chat without usage", append(chatEvents[:chatUsageEvent:chatUsageEvent], chatEvents[chatUsageEvent+1:]...), -1, Usage{}, false, 2},
		{"azure", azureEvents, azureUsageEvent, Usage{8, 1}, true, 1},
		{"completions", completionsEvents, 2, Usage{5, 2}, true, 2},
		{"anthropic", anthropicEvents, -1, Usage{25 + 5, 15}, true, 2},
		{"responses", responsesEvents, -1, Usage{37, 11}, true, 2},
	}
}

// lineEnds rewrites a stream's LF line ends to eol.
func lineEnds(s, eol string) string { return strings.ReplaceAll(s, "\n", eol) }

// filterWant is events joined without the usage-only one.
func filterWant(events []string, usageOnly int, eol string) string {
	var b strings.Builder
	for i, e := range events {
		if i != usageOnly {
			b.WriteString(lineEnds(e, eol))
		}
	}
	return b.String()
}

// runFilter filters chunks through a fresh strip Stream.
func runFilter(s *Stream, chunks ...[]byte) []byte {
	s.Reset(true)
	var out []byte
	for _, c := range chunks {
		out = s.Filter(out, c)
	}
	return s.Flush(out)
}

func TestStreamEverySplit(t *testing.T) {
	var s Stream
	for _, tt := range streamCases() {
		for _, eol := range []string{"\n", "\r\n", "\r"} {
			in := []byte(lineEnds(strings.Join(tt.events, ""), eol))
			wantOut := filterWant(tt.events, tt.usageOnly, eol)
			check := func(how string) {
				t.Helper()
				if u, ok := s.Usage(); u != tt.want || ok != tt.wantOK {
					t.Errorf("%s %q %s: Usage() = %+v, %v, want %+v, %v", tt.name, eol, how, u, ok, tt.want, tt.wantOK)
				}
				if d := s.Deltas(); d != tt.deltas {
					t.Errorf("%s %q %s: Deltas() = %d, want %d", tt.name, eol, how, d, tt.deltas)
				}
			}
			for i := 0; i <= len(in); i++ {
				s.Reset(false)
				s.Observe(in[:i])
				s.Observe(in[i:])
				check("Observe split at " + itoa(i))

				if got := runFilter(&s, in[:i], in[i:]); string(got) != wantOut {
					t.Fatalf("%s %q: Filter split at %d\n got %q\nwant %q", tt.name, eol, i, got, wantOut)
				}
				check("Filter split at " + itoa(i))
			}

			s.Reset(false)
			for i := range in {
				s.Observe(in[i : i+1])
			}
			check("Observe byte by byte")
			chunks := make([][]byte, len(in))
			for i := range in {
				chunks[i] = in[i : i+1]
			}
			if got := runFilter(&s, chunks...); string(got) != wantOut {
				t.Fatalf("%s %q: Filter byte by byte\n got %q\nwant %q", tt.name, eol, got, wantOut)
			}
			check("Filter byte by byte")

			// Without strip, Filter forwards everything.
			s.Reset(false)
			if got := s.Flush(s.Filter(nil, in)); !bytes.Equal(got, in) {
				t.Errorf("%s %q: Filter without strip changed the stream", tt.name, eol)
			}
			check("Filter without strip")
		}
	}
}

func itoa(i int) string {
	return string(appendInt(nil, i))
}

func appendInt(b []byte, i int) []byte {
	if i >= 10 {
		b = appendInt(b, i/10)
	}
	return append(b, byte('0'+i%10))
}

func TestStreamFraming(t *testing.T) {
	usage := `{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}`
	for _, tt := range []struct {
		name   string
		in     string
		want   string // Filter's output
		usage  Usage
		found  bool
		deltas int64
	}{
		{
			name:  "no space after the colon",
			in:    "data:" + usage + "\n\n",
			want:  "",
			usage: Usage{3, 4}, found: true,
		},
		{
			name:  "comments, id and retry fields pass",
			in:    ": keep-alive\n\nid: 7\nretry: 1000\ndata: " + usage + "\n\n",
			want:  ": keep-alive\n\n",
			usage: Usage{3, 4}, found: true,
		},
		{
			name:  "data split over lines",
			in:    "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3}}\n\n",
			want:  "",
			usage: Usage{3, 0}, found: true,
		},
		{
			name:   "a field without a colon ends nothing",
			in:     "data\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
			want:   "data\ndata: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
			deltas: 1, // the data is "\n{...}", still JSON
		},
		{
			name: "an incomplete event at the end is forwarded, not inspected",
			in:   "data: " + usage + "\n",
			want: "data: " + usage + "\n",
		},
		{
			name: "only data fields count",
			in:   "datum: " + usage + "\n\nevent: " + usage + "\n\n",
			want: "datum: " + usage + "\n\nevent: " + usage + "\n\n",
		},
		{
			name:  "usage with choices is kept",
			in:    `data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}` + "\n\n",
			want:  `data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}` + "\n\n",
			usage: Usage{1, 0}, found: true,
		},
		{
			name: "empty choices with null usage is kept",
			in:   `data: {"choices":[],"usage":null}` + "\n\n",
			want: `data: {"choices":[],"usage":null}` + "\n\n",
		},
		{
			name:  "mixed line ends",
			in:    "data: x\r\n\r" + "data: " + usage + "\r\n\n" + "data: [DONE]\n\r\n",
			want:  "data: x\r\n\r" + "data: [DONE]\n\r\n",
			usage: Usage{3, 4}, found: true,
		},
		{
			name:  "usage every chunk: the largest wins",
			in:    `data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}` + "\n\n" + `data: {"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}` + "\n\n",
			want:  `data: {"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}` + "\n\n" + `data: {"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":5,"completion_tokens":2}}` + "\n\n",
			usage: Usage{5, 2}, found: true,
			deltas: 2,
		},
		{
			name:   "tool call and reasoning deltas count",
			in:     `data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}` + "\n\n" + `data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}` + "\n\n" + `data: {"choices":[{"delta":{"content":""}}]}` + "\n\n",
			want:   `data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}` + "\n\n" + `data: {"choices":[{"delta":{"reasoning_content":"hm"}}]}` + "\n\n" + `data: {"choices":[{"delta":{"content":""}}]}` + "\n\n",
			deltas: 2,
		},
	} {
		var s Stream
		in := []byte(tt.in)
		for i := 0; i <= len(in); i++ {
			got := runFilter(&s, in[:i], in[i:])
			if string(got) != tt.want {
				t.Fatalf("%s: Filter split at %d = %q, want %q", tt.name, i, got, tt.want)
			}
			if u, ok := s.Usage(); u != tt.usage || ok != tt.found || s.Deltas() != tt.deltas {
				t.Fatalf("%s: split at %d: Usage() = %+v, %v, Deltas() = %d, want %+v, %v, %d", tt.name, i, u, ok, s.Deltas(), tt.usage, tt.found, tt.deltas)
			}
		}
	}
}

// bigResponsesCompleted is a response.completed event whose text makes it
// larger than dataWindow.
func bigResponsesCompleted(textBytes int) string {
	text := strings.Repeat("lorem ipsum ", textBytes/12)
	return "event: response.completed\n" + `data: {"type":"response.completed","sequence_number":900,"response":{"id":"resp_2","object":"response","status":"completed","output":[{"id":"msg_2","type":"message","role":"assistant","content":[{"type":"output_text","text":"` + text + `","annotations":[]}]}],"usage":{"input_tokens":12,"output_tokens":` + itoa(textBytes/6) + `,"total_tokens":1},"user":null,"metadata":{"k":"v"}}}` + "\n\n"
}

func TestStreamLargeEvents(t *testing.T) {
	big := bigResponsesCompleted(200 << 10)
	in := []byte(strings.Join(responsesEvents[:5], "") + big)
	for _, chunk := range []int{1 << 10, 16 << 10, len(in)} {
		var s Stream
		s.Reset(true)
		var out []byte
		for i := 0; i < len(in); i += chunk {
			out = s.Filter(out, in[i:min(i+chunk, len(in))])
			if len(s.held) > maxHeld || cap(s.data) > 2*dataWindow+chunk {
				t.Fatalf("chunk %d: holding %d bytes and %d bytes of data, want at most %d and %d", chunk, len(s.held), cap(s.data), maxHeld, 2*dataWindow)
			}
		}
		out = s.Flush(out)
		if !bytes.Equal(out, in) {
			t.Errorf("chunk %d: Filter changed a stream without a usage-only chunk", chunk)
		}
		if u, ok := s.Usage(); !ok || u != (Usage{12, (200 << 10) / 6}) {
			t.Errorf("chunk %d: Usage() = %+v, %v, want the large response.completed's {12 %d}", chunk, u, ok, (200<<10)/6)
		}
	}

	// A large content event is forwarded as it comes, and the usage chunk
	// after it is still removed.
	large := "data: " + chatChunk + `"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 150<<10) + `"}}],"usage":null}` + "\n\n"
	events := []string{chatEvents[0], large, chatEvents[chatUsageEvent], chatEvents[5]}
	in = []byte(strings.Join(events, ""))
	want := filterWant(events, 2, "\n")
	var s Stream
	for _, chunk := range []int{1, 4 << 10, len(in)} {
		s.Reset(true)
		var out []byte
		for i := 0; i < len(in); i += chunk {
			out = s.Filter(out, in[i:min(i+chunk, len(in))])
			if len(s.held) > maxHeld {
				t.Fatalf("chunk %d: holding %d bytes, want at most %d", chunk, len(s.held), maxHeld)
			}
		}
		if out = s.Flush(out); string(out) != want {
			t.Errorf("chunk %d: Filter output differs from the stream without its usage chunk", chunk)
		}
		if u, ok := s.Usage(); !ok || u != (Usage{9, 2}) || s.Deltas() != 1 {
			t.Errorf("chunk %d: Usage() = %+v, %v, Deltas() = %d, want {9 2}, true, 1", chunk, u, ok, s.Deltas())
		}
	}

	// An unterminated stream of data never holds more than the bound.
	s.Reset(true)
	junk := bytes.Repeat([]byte("data: aaaaaaaaaaaaaaa"), 1<<10)
	var n int
	for range 100 {
		n += len(s.Filter(nil, junk))
		if len(s.held) > maxHeld || cap(s.data) > 2*dataWindow+len(junk) {
			t.Fatalf("holding %d bytes and %d of data", len(s.held), cap(s.data))
		}
	}
	n += len(s.Flush(nil))
	if n != 100*len(junk) {
		t.Errorf("forwarded %d bytes, want %d", n, 100*len(junk))
	}
}

func TestStreamReset(t *testing.T) {
	var s Stream
	s.Reset(true)
	out := s.Filter(nil, []byte(chatEvents[1]+"data: {\"partial"))
	if string(out) != chatEvents[1] {
		t.Fatalf("Filter = %q, want the complete event only", out)
	}
	s.Reset(true)
	if u, ok := s.Usage(); ok || u != (Usage{}) || s.Deltas() != 0 {
		t.Errorf("after Reset: Usage() = %+v, %v, Deltas() = %d, want zero", u, ok, s.Deltas())
	}
	if got := s.Flush(nil); len(got) != 0 {
		t.Errorf("after Reset: Flush = %q, want nothing held", got)
	}
	if got := s.Filter(nil, []byte(chatEvents[chatUsageEvent])); len(got) != 0 {
		t.Errorf("after Reset: Filter(usage chunk) = %q, want it removed", got)
	}
}
