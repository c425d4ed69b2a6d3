package tokens

import (
	"bytes"

	"github.com/valyala/fastjson"
)

const (
	// maxHeld bounds the bytes Filter holds back of one incomplete event.
	// Beyond it the event is passed on as it comes: only the small
	// usage-only chunk is ever removed, and a client should not wait for a
	// huge event to end before seeing its start.
	maxHeld = 64 << 10
	// dataWindow bounds the data of one event that is kept to be inspected
	// (in a buffer of at most twice that). Larger events keep only their
	// last dataWindow bytes, which is where a Responses API
	// "response.completed" event, carrying the whole response, keeps its
	// usage.
	dataWindow = 32 << 10
	// maxEventName bounds the kept "event:" field; longer names are cut.
	maxEventName = 64
)

// lineState is where the SSE line parser is within a line.
type lineState uint8

const (
	atLineStart lineState = iota // nothing of the line seen yet
	inName                       // reading the field name
	valueStart                   // just after the colon: one space is skipped
	inValue                      // reading the field value
	skipLine                     // a comment or a field Sluice ignores
)

// fieldKind is the field a line carries.
type fieldKind uint8

const (
	otherField fieldKind = iota
	dataField
	eventField
)

// afterCR says what to do with an LF that follows the CR ending an event.
type afterCR uint8

const (
	noEvent afterCR = iota // the CR did not end an event
	emitLF                 // the event was forwarded: forward the LF too
	dropLF                 // the event was removed: remove the LF too
)

// Stream watches a server-sent-event response as it is relayed, to find
// its usage and count its content deltas, and optionally removes the
// usage-only chunk that [ForceIncludeUsage] caused (a data event whose JSON
// has "choices": [] and a non-null "usage"), so that a client that did not
// ask for usage sees what it would have seen.
//
// Events are framed per the HTML standard's server-sent events: lines end
// with LF, CRLF or CR, fields are "name: value", an empty line ends an
// event, and event boundaries may fall anywhere between calls. Stream
// keeps at most one incomplete event, bounded by 64 KiB of held-back bytes
// and 64 KiB of data.
//
// The zero Stream is ready after [Stream.Reset]; Reset it before each
// response to reuse it and its buffers. Use either Observe or Filter (and
// Flush) on one response, not both. A Stream is not safe for concurrent
// use.
type Stream struct {
	strip bool

	// The line parser's state carries across calls: a line may end in a
	// later call than it started.
	state   lineState
	kind    fieldKind
	name    [5]byte // field name so far, when it may still be "data" or "event"
	nameLen int
	cr      bool    // the last byte was a CR, so an LF next ends nothing
	lf      afterCR // what to do with that LF

	data     []byte // the current event's data (its tail when large)
	dataLen  int    // bytes of data the current event has had
	hasData  bool   // the current event has a data line
	event    [maxEventName]byte
	eventLen int

	held    []byte // Filter: the current event's bytes held back
	passing bool   // Filter: the current event outgrew maxHeld and is forwarded as it comes

	usage  Usage
	found  bool
	deltas int64

	p fastjson.Parser
}

// Reset prepares s for a new response; strip says whether Filter removes
// the usage-only chunk.
func (s *Stream) Reset(strip bool) {
	data, held, p := s.data[:0], s.held[:0], s.p
	*s = Stream{strip: strip, data: data, held: held, p: p}
}

// Observe inspects p, the next bytes of the response, which are forwarded
// unchanged.
func (s *Stream) Observe(p []byte) {
	s.feed(nil, p, false)
}

// Filter appends to dst the complete events of what it held back plus p,
// except the usage-only chunk when the Stream was Reset with strip, and
// holds back an incomplete trailing event (beyond 64 KiB it is forwarded
// rather than held). Without strip it appends p unchanged. It returns the
// extended dst.
func (s *Stream) Filter(dst, p []byte) []byte {
	if !s.strip {
		s.feed(nil, p, false)
		return append(dst, p...)
	}
	return s.feed(dst, p, true)
}

// Flush appends to dst whatever Filter held back, at the end of the
// response: an incomplete event is forwarded as it is (and not inspected:
// clients discard it too).
func (s *Stream) Flush(dst []byte) []byte {
	dst = append(dst, s.held...)
	s.held = s.held[:0]
	return dst
}

// Usage returns the usage the response reported: the usage chunk of Chat
// Completions and Completions, the "response.completed" (or incomplete or
// failed) event's response.usage in the Responses API, or Anthropic's
// message_start message.usage and message_delta usage. When several
// events report usage, each count is the largest seen. ok is false when
// none did, as when a stream was cut short.
func (s *Stream) Usage() (u Usage, ok bool) {
	return s.usage, s.found
}

// Deltas returns how many events carried generated content: a rough count
// of the completion tokens so far, to charge a stream cut short before its
// usage arrived.
func (s *Stream) Deltas() int64 {
	return s.deltas
}

// feed runs the parser over p. With filter it appends the bytes to forward
// to dst; seg is where the current event's bytes not yet held begin in p.
func (s *Stream) feed(dst, p []byte, filter bool) []byte {
	seg := 0
	for i := 0; i < len(p); {
		c := p[i]
		if s.cr {
			s.cr = false
			lf := s.lf
			s.lf = noEvent
			if c == '\n' {
				// The LF of a CRLF whose CR ended the line already. If that
				// line ended an event, the LF goes where the event went.
				if filter && lf != noEvent {
					if lf == emitLF {
						dst = append(dst, '\n')
					}
					seg = i + 1
				}
				i++
				continue
			}
		}
		if c == '\n' || c == '\r' {
			s.cr = c == '\r'
			if s.endLine() {
				usageOnly := s.dispatch()
				dropped := false
				if filter {
					size := len(s.held) + i + 1 - seg
					switch {
					case s.passing:
						dst = append(dst, p[seg:i+1]...)
					case usageOnly && size <= maxHeld:
						dropped = true
					default:
						dst = append(dst, s.held...)
						dst = append(dst, p[seg:i+1]...)
					}
					s.held, s.passing, seg = s.held[:0], false, i+1
				}
				if s.cr {
					s.lf = emitLF
					if dropped {
						s.lf = dropLF
					}
				}
			}
			i++
			continue
		}
		switch s.state {
		case atLineStart:
			if c == ':' {
				s.state = skipLine // a comment
				i++
				continue
			}
			s.state, s.nameLen = inName, 0
			fallthrough
		case inName:
			if c == ':' {
				s.kind = s.fieldKind()
				s.state = valueStart
				if s.kind == otherField {
					s.state = skipLine
				}
				i++
				continue
			}
			if s.nameLen < len(s.name) {
				s.name[s.nameLen] = c
			}
			s.nameLen++
			i++
		case valueStart:
			s.state = inValue
			s.startValue()
			if c == ' ' {
				i++
			}
		case inValue, skipLine:
			j := lineEnd(p, i)
			if s.state == inValue {
				s.addValue(p[i:j])
			}
			i = j
		}
	}
	if filter {
		rest := p[seg:]
		switch {
		case s.passing:
			dst = append(dst, rest...)
		case len(s.held)+len(rest) > maxHeld:
			dst = append(dst, s.held...)
			dst = append(dst, rest...)
			s.held, s.passing = s.held[:0], true
		default:
			s.held = appendCapped(s.held, rest, maxHeld)
		}
	}
	return dst
}

// appendCapped appends v to b, which with v fits in limit bytes, growing
// b's capacity no further than limit.
func appendCapped(b, v []byte, limit int) []byte {
	if n := len(b) + len(v); n > cap(b) {
		nb := make([]byte, len(b), min(max(2*cap(b), n, 512), limit))
		copy(nb, b)
		b = nb
	}
	return append(b, v...)
}

// lineEnd returns the index of the first CR or LF at or after i, or len(p).
func lineEnd(p []byte, i int) int {
	q := p[i:]
	if j := bytes.IndexByte(q, '\n'); j >= 0 {
		q = q[:j]
	}
	if j := bytes.IndexByte(q, '\r'); j >= 0 {
		q = q[:j]
	}
	return i + len(q)
}

func (s *Stream) fieldKind() fieldKind {
	switch string(s.name[:min(s.nameLen, len(s.name))]) {
	case "data":
		if s.nameLen == 4 {
			return dataField
		}
	case "event":
		if s.nameLen == 5 {
			return eventField
		}
	}
	return otherField
}

// startValue begins a field's value: a data line adds a line to the
// event's data, an event line replaces the event type.
func (s *Stream) startValue() {
	switch s.kind {
	case dataField:
		if s.hasData {
			s.appendData([]byte{'\n'})
		}
		s.hasData = true
	case eventField:
		s.eventLen = 0
	}
}

func (s *Stream) addValue(v []byte) {
	switch s.kind {
	case dataField:
		s.appendData(v)
	case eventField:
		n := copy(s.event[s.eventLen:], v)
		s.eventLen += n
	}
}

// appendData adds to the event's data, keeping only its last dataWindow
// bytes (at least) once it grows past twice that.
func (s *Stream) appendData(v []byte) {
	s.dataLen += len(v)
	if len(s.data)+len(v) <= 2*dataWindow {
		s.data = appendCapped(s.data, v, 2*dataWindow)
		return
	}
	if len(v) >= dataWindow {
		s.data = append(s.data[:0], v[len(v)-dataWindow:]...)
		return
	}
	keep := dataWindow - len(v)
	n := copy(s.data, s.data[len(s.data)-keep:])
	s.data = append(s.data[:n], v...)
}

// endLine ends the current line and reports whether it was the empty line
// that ends an event.
func (s *Stream) endLine() bool {
	switch s.state {
	case atLineStart:
		return true
	case inName:
		// A line without a colon is a field with an empty value.
		s.kind = s.fieldKind()
		s.startValue()
	case valueStart:
		s.startValue()
	}
	s.state = atLineStart
	return false
}

// dispatch inspects the event that just ended, starts the next, and
// reports whether the event was the usage-only chunk that Filter removes
// when stripping.
func (s *Stream) dispatch() (usageOnly bool) {
	if s.hasData {
		usageOnly = s.inspect()
	}
	s.data, s.dataLen, s.hasData, s.eventLen = s.data[:0], 0, false, 0
	return usageOnly
}

// inspect looks for usage and content in the event's data, and reports
// whether it is a usage-only chunk to strip.
func (s *Stream) inspect() (usageOnly bool) {
	data := s.data
	if s.dataLen > dataWindow {
		s.inspectTail(data[len(data)-dataWindow:])
		return false
	}
	if string(data) == "[DONE]" {
		return false
	}
	v, err := s.p.ParseBytes(data)
	if err != nil || v.Type() != fastjson.TypeObject {
		return false
	}
	// Chat Completions and Completions chunks, and Anthropic's
	// message_delta, carry "usage" at the top; Anthropic's message_start
	// in "message"; Responses API events in "response".
	usage := v.Get("usage")
	s.merge(usage)
	s.merge(v.Get("message", "usage"))
	s.merge(v.Get("response", "usage"))
	if hasContent(v) {
		s.deltas++
	}
	if !s.strip || usage == nil || usage.Type() != fastjson.TypeObject {
		return false
	}
	choices := v.Get("choices")
	return choices != nil && choices.Type() == fastjson.TypeArray && len(choices.GetArray()) == 0
}

// inspectTail handles an event too large to keep whole. Only a Responses
// API event carries usage in so large an event, in response.usage near
// the end; any other event this large is generated content.
func (s *Stream) inspectTail(tail []byte) {
	ev := s.event[:min(s.eventLen, len(s.event))]
	if bytes.HasPrefix(ev, []byte("response.")) && !bytes.HasSuffix(ev, []byte(".delta")) {
		if val, ok := lastMember(bytes.TrimRight(tail, " \t\r\n"), "usage", 2); ok {
			if u, ok := parseUsage(&s.p, val); ok {
				s.add(u)
			}
		}
		return
	}
	s.deltas++
}

func (s *Stream) merge(v *fastjson.Value) {
	if v == nil || v.Type() != fastjson.TypeObject {
		return
	}
	if u, ok := usageOf(v); ok {
		s.add(u)
	}
}

func (s *Stream) add(u Usage) {
	s.usage.Prompt = max(s.usage.Prompt, u.Prompt)
	s.usage.Completion = max(s.usage.Completion, u.Completion)
	s.found = true
}

// hasContent reports whether a data event carried generated content: a
// chat delta with content, reasoning, a refusal or tool calls, a
// completion's text, an Anthropic content_block_delta, or a Responses API
// "*.delta" event.
func hasContent(v *fastjson.Value) bool {
	typ := v.GetStringBytes("type")
	if string(typ) == "content_block_delta" {
		return true
	}
	if bytes.HasPrefix(typ, []byte("response.")) {
		return bytes.HasSuffix(typ, []byte(".delta"))
	}
	for _, c := range v.GetArray("choices") {
		if len(c.GetStringBytes("text")) > 0 {
			return true
		}
		d := c.Get("delta")
		if d == nil || d.Type() != fastjson.TypeObject {
			continue
		}
		for _, k := range [...]string{"content", "reasoning_content", "reasoning", "refusal"} {
			if len(d.GetStringBytes(k)) > 0 {
				return true
			}
		}
		if len(d.GetArray("tool_calls")) > 0 || isSet(d.Get("function_call")) {
			return true
		}
	}
	return false
}
