package limiter

import "time"

// Ask is how a reservation may be made: how far ahead it may be committed
// and how much of every rate bucket's burst it must leave to others.
type Ask struct {
	// CommitWithin commits a reservation whose slot lies at most this far
	// in the future; the caller then waits out [Decision].Wait itself.
	// Zero: only a reservation that may go now is committed. Negative
	// counts as zero.
	CommitWithin time.Duration
	// Headroom is the fraction of each rate dimension's burst tolerance the
	// request must leave unused: it fits only while, after its charge, at
	// least Headroom × burst remains (or as much as its own size allows, so
	// a request never becomes unadmittable). Lower priority classes ask with
	// headroom so that the top of every bucket stays free for higher ones,
	// also across replicas sharing the bucket (FIELD-NOTES §6.4). In [0, 1);
	// values outside count as the nearest bound.
	Headroom float64
}
