package proxy

import (
	"net/netip"
	"sync"
	"time"

	"banger/internal/egress/policy"
)

// Bounds of the per-VM map of DNS answers.
const (
	maxResolvedNames = 4096
	maxAddrsPerName  = 64
	minAnswerTTL     = time.Minute
	maxAnswerTTL     = time.Hour
	// answerGrace is how long past its (clamped) TTL an answer still
	// vouches for a destination: a guest's resolver cache and long-lived
	// connections outlive a TTL a little.
	answerGrace = 10 * time.Minute
)

// resolvedNames remembers which addresses banger's DNS server gave a VM
// for which names, so that a transparent connection's name (SNI or Host)
// can be checked against where the guest actually sent it.
type resolvedNames struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]map[netip.Addr]time.Time // name -> addr -> valid until
}

func newResolvedNames(now func() time.Time) *resolvedNames {
	return &resolvedNames{now: now, m: map[string]map[netip.Addr]time.Time{}}
}

func (r *resolvedNames) record(name string, addrs []netip.Addr, ttl time.Duration) {
	n, err := policy.NormalizeName(name)
	if err != nil || len(addrs) == 0 {
		return
	}
	ttl = min(max(ttl, minAnswerTTL), maxAnswerTTL)
	now := r.now()
	until := now.Add(ttl + answerGrace)
	r.mu.Lock()
	defer r.mu.Unlock()
	set, ok := r.m[n]
	if !ok {
		if len(r.m) >= maxResolvedNames {
			r.expireLocked(now)
		}
		if len(r.m) >= maxResolvedNames {
			r.evictOneLocked()
		}
		set = map[netip.Addr]time.Time{}
		r.m[n] = set
	}
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() {
			continue
		}
		if _, ok := set[a]; !ok && len(set) >= maxAddrsPerName {
			evictAddr(set)
		}
		set[a] = until
	}
}

func (r *resolvedNames) has(name string, addr netip.Addr) bool {
	n, err := policy.NormalizeName(name)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	until, ok := r.m[n][addr.Unmap()]
	return ok && r.now().Before(until)
}

func (r *resolvedNames) expireLocked(now time.Time) {
	for n, set := range r.m {
		for a, until := range set {
			if !now.Before(until) {
				delete(set, a)
			}
		}
		if len(set) == 0 {
			delete(r.m, n)
		}
	}
}

// evictOneLocked drops the name whose newest answer is the oldest.
func (r *resolvedNames) evictOneLocked() {
	var victim string
	var best time.Time
	for n, set := range r.m {
		var newest time.Time
		for _, until := range set {
			if until.After(newest) {
				newest = until
			}
		}
		if victim == "" || newest.Before(best) {
			victim, best = n, newest
		}
	}
	delete(r.m, victim)
}

func evictAddr(set map[netip.Addr]time.Time) {
	var victim netip.Addr
	var best time.Time
	for a, until := range set {
		if !victim.IsValid() || until.Before(best) {
			victim, best = a, until
		}
	}
	delete(set, victim)
}

func (r *resolvedNames) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
