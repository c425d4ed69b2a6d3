// Package cluster coordinates Sluice replicas that share one Redis (shared
// mode). Each replica keeps its own state and its own decisions; Redis only
// carries hints between them, so a replica that cannot reach Redis keeps
// working alone.
//
// # Breakers
//
// Each replica keeps its own circuit breaker per provider (package breaker).
// When one replica's breaker opens, [BreakerSync.Publish] tells the others
// until when, and [BreakerSync.Run] hands what the others published to a
// callback that holds the local breaker open until the same moment
// ([github.com/sluice-ai/sluice/breaker.Breaker.HoldOpenUntil]). The
// replica that saw the failures runs the half-open probes; the others
// resume when the hint ends. gobreaker's
// DistributedCircuitBreaker is not used: it serialises every call through a
// Redis lock for the length of the upstream call (FIELD-NOTES §4.3).
//
// A hint travels two ways, so that no replica misses one:
//
//   - The key <prefix>breaker:{<provider>}, e.g. "sluice:breaker:{openai}",
//     holds the latest-ending hint for the provider and expires (PX, by
//     Redis's clock) when it ends. A later hint replaces it; an earlier one
//     is dropped. Run reads the keys of its providers when it subscribes,
//     after every resubscription and every 30s, so a replica that starts,
//     or reconnects, while a breaker is open learns it.
//   - The channel <prefix>breaker, e.g. "sluice:breaker", carries each hint
//     that replaced the key, at once, to the replicas subscribed.
//
// Both hold the same JSON object, written by one Lua script (storing and
// publishing are one atomic step, so a subscriber that reads the key after
// its subscription was confirmed misses nothing):
//
//	{"provider":"openai","until_ms":1767225630000,"replica":"sluice-a1"}
//
// until_ms is when the hint ends, in Unix milliseconds (rounded up) of the
// publishing replica's clock: replicas' clocks are assumed to agree (NTP) to
// well within a breaker's open period. replica is the publisher, whose own
// hints Run ignores. Other fields are ignored, for later versions.
//
// # Redis Cluster
//
// Every key names its provider as a hash tag ({openai}), so the script
// touches a single slot, and Run reads the keys of several providers with
// one GET each, pipelined (go-redis's ClusterClient sends them to the nodes
// that own the slots; MGET would fail across slots). PUBLISH on a Redis
// Cluster reaches the subscribers of every node (the cluster bus forwards
// it), including a PUBLISH made by a script, so sharded pub/sub
// (SPUBLISH/SSUBSCRIBE) is not needed: the traffic is one small message per
// breaker opening.
package cluster
