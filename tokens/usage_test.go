package tokens

import (
	"strconv"
	"strings"
	"testing"
)

const (
	chatResponse = `{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today? (My \"usage\": {\"prompt_tokens\": 99} is fine.)",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": null
}
`
	completionsResponse = `{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`
	responsesResponse   = `{"id":"resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41","object":"response","created_at":1741476777,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4o-2024-08-06","output":[{"type":"message","id":"msg_67ccd3acc8d48190a77525dc6de64b4104becb25c45c1d41","status":"completed","role":"assistant","content":[{"type":"output_text","text":"The image depicts a scenic landscape.","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1,"truncation":"disabled","usage":{"input_tokens":328,"input_tokens_details":{"cached_tokens":0},"output_tokens":52,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":380},"user":null,"metadata":{}}`
	anthropicResponse   = `{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Let me look that up."},{"type":"tool_use","id":"toolu_01A","name":"lookup","input":{"usage":{"input_tokens":1,"output_tokens":1}}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":100,"cache_read_input_tokens":1800,"output_tokens":503,"service_tier":"standard"}}`
)

// embeddingsResponse returns an embeddings response of about size bytes.
func embeddingsResponse(size int) []byte {
	b := []byte(`{"object":"list","data":[`)
	for i := 0; len(b) < size; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":[`...)
		for j := range 1536 {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64((i*1536+j)%2000-1000)/1e4+0.00012345, 'f', 9, 64)
		}
		b = append(b, "]}"...)
	}
	return append(b, `],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`...)
}

func TestResponseUsage(t *testing.T) {
	for _, tt := range []struct {
		name   string
		body   string
		want   Usage
		wantOK bool
	}{
		{"chat", chatResponse, Usage{19, 10}, true},
		{"completions", completionsResponse, Usage{5, 7}, true},
		{"embeddings", string(embeddingsResponse(40 << 10)), Usage{8, 0}, true},
		{"responses", responsesResponse, Usage{328, 52}, true},
		{"anthropic with cache creation", anthropicResponse, Usage{2095 + 100, 503}, true},
		{"usage first", `{"usage":{"prompt_tokens":1,"completion_tokens":2},"choices":[{"x":{"usage":{"prompt_tokens":9}}}]}`, Usage{1, 2}, true},
		{"prompt_tokens wins over input_tokens", `{"usage":{"input_tokens":3,"prompt_tokens":4,"output_tokens":5}}`, Usage{4, 5}, true},
		{"duplicate usage: the last wins", `{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":2}}`, Usage{2, 0}, true},
		{"duplicate field: the last wins", `{"usage":{"prompt_tokens":1,"prompt_tokens":3}}`, Usage{3, 0}, true},
		{"escaped key", `{"usag\u0065":{"prompt_tokens":6}}`, Usage{6, 0}, true},
		{"null fields are absent", `{"usage":{"prompt_tokens":6,"completion_tokens":null}}`, Usage{6, 0}, true},
		{"white space", " \n{ \"usage\" :\n { \"input_tokens\" : 1 , \"output_tokens\" : 2 } \n} \n", Usage{1, 2}, true},

		{"usage null", `{"id":"x","usage":null}`, Usage{}, false},
		{"no usage", `{"id":"x","choices":[]}`, Usage{}, false},
		{"usage only in a string", `{"choices":[{"message":{"content":"\"usage\":{\"prompt_tokens\":5}"}}]}`, Usage{}, false},
		{"usage only nested", `{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":5,"output_tokens":6}}}],"stop_reason":"tool_use"}`, Usage{}, false},
		{"usage only in an array", `{"data":["usage",{"usage":{"prompt_tokens":1}}]}`, Usage{}, false},
		{"usage as a value", `{"type":"usage"}`, Usage{}, false},
		{"key with an escaped quote", `{"a\"usage":{"prompt_tokens":1}}`, Usage{}, false},
		{"empty usage", `{"usage":{}}`, Usage{}, false},
		{"only total_tokens", `{"usage":{"total_tokens":5}}`, Usage{}, false},
		{"string count", `{"usage":{"prompt_tokens":"5"}}`, Usage{}, false},
		{"negative count", `{"usage":{"prompt_tokens":-1}}`, Usage{}, false},
		{"fractional count", `{"usage":{"prompt_tokens":1.5}}`, Usage{}, false},
		{"usage not an object", `{"usage":5}`, Usage{}, false},
		{"usage an array", `{"usage":[{"prompt_tokens":1}]}`, Usage{}, false},
		{"body an array", `[{"usage":{"prompt_tokens":1}}]`, Usage{}, false},
		{"empty", ``, Usage{}, false},
		{"truncated", `{"usage":{"prompt_tokens":1}`, Usage{}, false},
		{"garbage", `}}}"usage":{"prompt_tokens":1}}`, Usage{}, false},
	} {
		got, ok := ResponseUsage([]byte(tt.body))
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: ResponseUsage = %+v, %v, want %+v, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestResponseUsageLarge(t *testing.T) {
	body := embeddingsResponse(4 << 20)
	got, ok := ResponseUsage(body)
	if !ok || got != (Usage{8, 0}) {
		t.Errorf("ResponseUsage(%d-byte embeddings) = %+v, %v, want {8 0}, true", len(body), got, ok)
	}
	// Without the usage the whole body is walked back, and found wanting.
	i := strings.LastIndex(string(body), `,"usage"`)
	body = append(body[:i:i], '}')
	if got, ok := ResponseUsage(body); ok {
		t.Errorf("ResponseUsage(embeddings without usage) = %+v, true, want false", got)
	}
}
