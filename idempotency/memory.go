package idempotency

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"
)

// Memory is a [Store] in process, for a single replica: a map of entries
// with an LRU list bounded by [Settings].MaxKeys.
//
// Only outcomes (Done and Forgotten entries) are evicted, least recently
// used first; a hold never is, so while more than MaxKeys keys are held at
// once the map outgrows MaxKeys until they complete. Outcomes expire after
// Retention, checked when the key is next used (and gone sooner if evicted).
// Holds lapse after LockTTL unless [Memory.Run] renews them.
//
// Waiters sleep on a channel of the entry, closed when its hold ends
// (Complete, Abandon, or lapse), so Wait answers as soon as the key frees.
//
// A Memory is safe for concurrent use. Its methods never do I/O; ctx only
// bounds Wait.
type Memory struct {
	s   Settings
	now func() time.Time

	mu      sync.Mutex // protects entries, lru, held and the entries' fields
	entries map[memKey]*entry
	lru     *list.List          // of *entry, Done and Forgotten only, most recently used first
	held    map[*entry]struct{} // the entries in the held state
}

// memKey names an entry.
type memKey struct{ scope, key string }

// entry is one key's state in a [Memory].
type entry struct {
	k    memKey
	hash [32]byte

	// While held: the hold's token, whether the holder streams, and a
	// channel closed when the hold ends. Otherwise token is "" and
	// changed nil.
	token   string
	stream  bool
	changed chan struct{}

	// After Complete: the outcome (only Status when forgotten).
	forgotten bool
	out       Outcome

	until time.Time     // when the hold lapses, or when the outcome expires
	elem  *list.Element // in lru when not held
}

func (e *entry) isHeld() bool { return e.changed != nil }

// NewMemory returns an empty in-process store.
func NewMemory(s Settings) *Memory {
	return &Memory{
		s:       s.withDefaults(),
		now:     time.Now,
		entries: make(map[memKey]*entry),
		lru:     list.New(),
		held:    make(map[*entry]struct{}),
	}
}

// Begin implements [Store.Begin]. ctx is unused: the answer is immediate.
func (m *Memory) Begin(_ context.Context, scope, key string, hash [32]byte, stream, retryFailed bool) (Claim, error) {
	if err := checkKey(key); err != nil {
		return Claim{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	c, _ := m.begin(memKey{scope, key}, hash, stream, retryFailed, now)
	return c, nil
}

// begin answers Begin for k at now; for InFlight it also returns the
// holder's entry. Requires m.mu held.
func (m *Memory) begin(k memKey, hash [32]byte, stream, retryFailed bool, now time.Time) (Claim, *entry) {
	e := m.live(k, now)
	if e == nil {
		e = &entry{k: k, hash: hash}
		m.entries[k] = e
		m.hold(e, stream, now)
		m.evict()
		return Claim{State: Acquired, Token: e.token}, nil
	}
	if e.hash != hash {
		return Claim{State: Mismatch}, nil
	}
	if e.isHeld() {
		return Claim{State: InFlight, Streaming: e.stream}, e
	}
	if retryFailed && failed(e.out.Status) {
		m.lru.Remove(e.elem)
		e.elem = nil
		e.forgotten, e.out = false, Outcome{}
		m.hold(e, stream, now)
		return Claim{State: Acquired, Token: e.token}, nil
	}
	m.lru.MoveToFront(e.elem)
	if e.forgotten {
		return Claim{State: Forgotten, Outcome: Outcome{Status: e.out.Status}}, nil
	}
	o := e.out
	o.Header = append([][2]string(nil), o.Header...)
	o.Body = cloneBytes(o.Body)
	return Claim{State: Done, Outcome: o}, nil
}

// hold makes e held by a new token until now + LockTTL. e must not be in
// the LRU list. Requires m.mu held.
func (m *Memory) hold(e *entry, stream bool, now time.Time) {
	e.token = newToken()
	e.stream = stream
	e.changed = make(chan struct{})
	e.until = now.Add(m.s.LockTTL)
	m.held[e] = struct{}{}
}

// live returns k's entry, or nil when there is none or it lapsed or
// expired at now, in which case it is removed. Requires m.mu held.
func (m *Memory) live(k memKey, now time.Time) *entry {
	e := m.entries[k]
	if e == nil {
		return nil
	}
	if now.Before(e.until) {
		return e
	}
	m.remove(e)
	return nil
}

// remove deletes e and wakes its waiters. Requires m.mu held.
func (m *Memory) remove(e *entry) {
	delete(m.entries, e.k)
	if e.elem != nil {
		m.lru.Remove(e.elem)
		e.elem = nil
	}
	m.release(e)
}

// release ends e's hold, if any, and wakes its waiters. Requires m.mu held.
func (m *Memory) release(e *entry) {
	if !e.isHeld() {
		return
	}
	close(e.changed)
	e.changed = nil
	e.token = ""
	delete(m.held, e)
}

// evict removes the least recently used outcomes while there are more than
// MaxKeys entries; holds stay. Requires m.mu held.
func (m *Memory) evict() {
	for len(m.entries) > m.s.MaxKeys {
		back := m.lru.Back()
		if back == nil {
			return
		}
		m.remove(back.Value.(*entry))
	}
}

// Wait implements [Store.Wait]. It sleeps until the holder completes or
// abandons, or its hold lapses, with no polling.
func (m *Memory) Wait(ctx context.Context, scope, key string, hash [32]byte, stream bool) (Claim, error) {
	if err := checkKey(key); err != nil {
		return Claim{}, err
	}
	k := memKey{scope, key}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		now := m.now()
		m.mu.Lock()
		c, holder := m.begin(k, hash, stream, false, now)
		var changed <-chan struct{}
		var until time.Time
		if holder != nil {
			changed, until = holder.changed, holder.until
		}
		m.mu.Unlock()
		if c.State != InFlight {
			return c, nil
		}
		// The timer wakes this waiter when the hold would lapse; Run may
		// have renewed it by then, and the loop sleeps again.
		d := until.Sub(now)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-changed:
		case <-timer.C:
		case <-ctx.Done():
			return Claim{}, fmt.Errorf("idempotency: waiting for a key in %s: %w", scope, context.Cause(ctx))
		}
	}
}

// Complete implements [Store.Complete]. ctx is unused.
func (m *Memory) Complete(_ context.Context, scope, key, token string, o Outcome) error {
	if err := checkStatus(o.Status); err != nil {
		return err
	}
	forgotten := len(o.Body) > m.s.MaxBody
	if forgotten {
		o = Outcome{Status: o.Status}
	} else {
		o = kept(o) // outside the lock: it copies up to MaxBody bytes
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.heldBy(memKey{scope, key}, token, now)
	if e == nil {
		return ErrNotHeld
	}
	m.release(e)
	e.forgotten, e.out = forgotten, o
	e.until = now.Add(m.s.Retention)
	e.elem = m.lru.PushFront(e)
	m.evict()
	return nil
}

// Abandon implements [Store.Abandon]. ctx is unused.
func (m *Memory) Abandon(_ context.Context, scope, key, token string) error {
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.heldBy(memKey{scope, key}, token, now)
	if e == nil {
		return ErrNotHeld
	}
	m.remove(e)
	return nil
}

// heldBy returns k's entry if token holds it at now, else nil. Requires
// m.mu held.
func (m *Memory) heldBy(k memKey, token string, now time.Time) *entry {
	e := m.live(k, now)
	if e == nil || !e.isHeld() || e.token != token {
		return nil
	}
	return e
}

// Run implements [Store.Run]: every third of LockTTL it extends every
// hold by LockTTL. It returns when ctx is done.
func (m *Memory) Run(ctx context.Context) {
	t := time.NewTicker(m.s.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.renew(m.now())
		}
	}
}

// renew extends the holds still live at now to now + LockTTL, and removes
// those that lapsed already (as Redis would have).
func (m *Memory) renew(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for e := range m.held {
		if now.Before(e.until) {
			e.until = now.Add(m.s.LockTTL)
		} else {
			m.remove(e)
		}
	}
}
