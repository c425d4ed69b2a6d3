package retry

import "time"

// Pause returns how long the provider asked callers to wait, from the
// first of these that is present and well formed:
//
//  1. retry-after-ms (Azure OpenAI; the SDKs read it first);
//  2. Retry-After, delta-seconds or an HTTP-date (RFC 9110 section 10.2.3);
//  3. the reset header of each exhausted dimension: OpenAI's
//     x-ratelimit-reset-{requests,tokens} where the matching
//     x-ratelimit-remaining-* is 0, and Anthropic's
//     anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset
//     where the matching -remaining is 0; the longest of them.
//
// OpenAI 429s often carry only the reset headers (FIELD-NOTES 2.1), and a
// reset header alone is the time until the bucket is full again, far longer
// than needed, which is why only an exhausted dimension counts
// (anthropic-sdk-typescript#357). ok is false when nothing applies. d is
// never negative (a time in the past is 0) and never over about 100 years;
// it is not capped otherwise. Pause does not allocate when h.Peek does not.
func Pause(h Header, now time.Time) (d time.Duration, ok bool) {
	if d, ok := askedPause(h, now); ok {
		return d, true
	}
	return resetPause(h, now)
}

// askedPause is the explicit part of [Pause]: retry-after-ms, then
// Retry-After.
func askedPause(h Header, now time.Time) (time.Duration, bool) {
	if h == nil {
		return 0, false
	}
	if d, ok := ParseRetryAfterMs(h.Peek(hdrRetryAfterMs)); ok {
		return d, true
	}
	return ParseRetryAfter(h.Peek(hdrRetryAfter), now)
}

// dimension pairs one rate-limit dimension's remaining header with its
// reset header.
type dimension struct{ remaining, reset string }

// resetPause is the longest reset among the exhausted dimensions.
func resetPause(h Header, now time.Time) (d time.Duration, ok bool) {
	if h == nil {
		return 0, false
	}
	// An array value, not a package variable: it stays on the stack and
	// nothing can modify it.
	dims := [...]dimension{
		{"x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"},
		{"x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"},
		{"anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-reset"},
		{"anthropic-ratelimit-tokens-remaining", "anthropic-ratelimit-tokens-reset"},
		{"anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-reset"},
		{"anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-reset"},
	}
	for _, dim := range dims {
		if n, nok := ParseRemaining(h.Peek(dim.remaining)); !nok || n != 0 {
			continue
		}
		if r, rok := ParseReset(h.Peek(dim.reset), now); rok && (!ok || r > d) {
			d, ok = r, true
		}
	}
	return d, ok
}

// Remaining reports what the provider says is left of its request and
// token limits, for syncing a local limiter down to it (FIELD-NOTES 7.1).
// requests comes from x-ratelimit-remaining-requests (OpenAI, Azure) or
// else anthropic-ratelimit-requests-remaining; tokens from
// x-ratelimit-remaining-tokens or else the smallest of Anthropic's
// tokens, input-tokens and output-tokens remaining that are present, the
// tightest of its token buckets. Each ok flag is false when its header is
// absent or malformed (Azure has sent -1, which is malformed here).
func Remaining(h Header) (requests int64, reqOK bool, tokens int64, tokOK bool) {
	if h == nil {
		return 0, false, 0, false
	}
	requests, reqOK = ParseRemaining(h.Peek("x-ratelimit-remaining-requests"))
	if !reqOK {
		requests, reqOK = ParseRemaining(h.Peek("anthropic-ratelimit-requests-remaining"))
	}
	tokens, tokOK = ParseRemaining(h.Peek("x-ratelimit-remaining-tokens"))
	if tokOK {
		return requests, reqOK, tokens, tokOK
	}
	for _, key := range [...]string{
		"anthropic-ratelimit-tokens-remaining",
		"anthropic-ratelimit-input-tokens-remaining",
		"anthropic-ratelimit-output-tokens-remaining",
	} {
		if n, ok := ParseRemaining(h.Peek(key)); ok && (!tokOK || n < tokens) {
			tokens, tokOK = n, true
		}
	}
	return requests, reqOK, tokens, tokOK
}
