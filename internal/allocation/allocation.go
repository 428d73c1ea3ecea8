// Package allocation assigns scrape targets to the members of a group.
//
// It is a pure state machine: members and targets in, assignment out. It does
// no I/O, reads no clock and imports nothing of Kubernetes or Prometheus; of
// them it knows only the names of the discovered labels that give a target's
// node (NodeOf). No goroutine it starts outlives a call: a call that ranks
// many targets spreads them over every core and returns when all are ranked,
// with the answer one core would give. An Allocator is not safe for
// concurrent use; its user serialises calls.
//
// Three strategies carry the names and meaning of the OpenTelemetry Target
// Allocator's allocation_strategy values:
//
//   - consistent-hashing (the default): the assignment is a function of the set
//     of member names and the set of target hashes only, so every member, and a
//     new leader after a failover, computes the same answer. See
//     consistent_hashing.go for the algorithm and its guarantees.
//   - least-weighted: a new target goes to the member with the fewest targets,
//     among those to the one with the fewest of the target's job; a target
//     stays where it is until it or its member goes away. The answer depends
//     on the order of events, as it does in the Target Allocator.
//   - per-node: a target goes to the member running on the target's node, or
//     stays unassigned while no member runs there; targets without a node go
//     to an optional fallback strategy or stay unassigned.
//
// A fourth, series-weighted, balances what the members measure of their
// targets (Measure) rather than their number; see series_weighted.go.
//
// Two placement limits hold for every strategy (pin.go): a target pinned to a
// member (Target.Pin, from PinLabel) goes to that member while it is one, and
// a member never gets more targets than WithLimit allows; the targets no
// member may take then are unassigned, and counted (Counts.OverLimit). A
// third, WithSeriesLimit, bounds each member's series load: a member keeps
// the targets that score it highest, as rendezvous hashing scores them, up
// to the limit, and the others are unassigned and counted too.
package allocation

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// Strategy names, spelled as the Target Allocator's allocation_strategy values.
const (
	ConsistentHashing = "consistent-hashing"
	LeastWeighted     = "least-weighted"
	PerNode           = "per-node"
)

// Strategies returns the valid strategy names, default first.
func Strategies() []string {
	return []string{ConsistentHashing, LeastWeighted, PerNode, SeriesWeighted}
}

// Measurement is what a member measured of a target it scrapes.
type Measurement struct {
	Hash uint64 // the target's, as in Target
	// Member is the identity of the member that measured it: the one that
	// scrapes it, as far as that member knows.
	Member string
	// Series is the target's series per scrape: the samples its last
	// scrape gave.
	Series int64
}

// Target is one scrape target as the allocator sees it.
type Target struct {
	// Hash identifies the target: two targets with the same Hash are the same
	// target. The caller computes it once, from the job name and the target's
	// labels, with a hash that is the same in every process (FNV-1a or xxhash;
	// never hash/maphash, whose seed is random). The allocator never rehashes.
	Hash uint64
	// Node is the name of the node the target runs on, as NodeOf reads it
	// from the target's labels, or "" if it has none. Only per-node reads it.
	Node string
	// Job is the name of the target's scrape job. Only least-weighted (also
	// as per-node's fallback) reads it, to spread each job's targets.
	Job string
	// Pin is the identity of the member the target is pinned to, from its
	// PinLabel after relabeling, or "". A pinned target goes to that member,
	// whatever the strategy, while it is a member; while it is not, the
	// target is placed as if it had no pin.
	Pin string
}

// PinLabel is the target label, read after relabeling, that pins a target
// to the member it names; relabel_configs can set it from any discovered
// label. Prometheus drops labels that start with "__" once relabeling is
// done, so it never reaches the scraped series.
const PinLabel = "__embedded_ta_member"

// Member is one member of the group: a collector that scrapes its share of the targets.
type Member struct {
	Identity string // unique and non-empty; the collector_id of the API
	Node     string // the node the member runs on, or ""; only per-node reads it
}

// Allocator keeps an assignment of targets to members up to date.
//
// The mutating methods take the whole member set, the whole target set, or a
// change of the target set; SetTargets costs a pass over its targets, Update
// a cost in proportion to its change. They do not report what moved: the
// assignment they leave behind is read with MemberOf, Assignment and Unassigned,
// and a caller that needs the difference compares two Assignment snapshots,
// which it builds anyway to serve them.
type Allocator interface {
	// Strategy returns the strategy's name.
	Strategy() string
	// SetMembers replaces the members. It fails, changing nothing, if an identity is
	// empty or appears twice.
	SetMembers(members []Member) error
	// SetTargets replaces the targets. Targets already present keep their
	// state; of several targets with one Hash the first is kept.
	SetTargets(targets []Target)
	// Update removes the targets with the given hashes, then adds the given
	// targets, at a cost in proportion to the change. Unknown hashes in removed
	// and known ones in added are ignored.
	Update(added []Target, removed []uint64)
	// MemberOf returns the member the target is assigned to; ok is false when the
	// target is unknown or unassigned. It only reads: calls from several
	// goroutines may run at once while no mutating method does (MembersOf).
	MemberOf(hash uint64) (member string, ok bool)
	// Assignment returns the hashes of each member's targets, in no particular
	// order. Every member has an entry, possibly empty.
	Assignment() map[string][]uint64
	// Unassigned returns the hashes of the targets that have no member: all of
	// them when there is no member, and, for per-node, those whose node runs
	// no member and, without a fallback, those without a node.
	Unassigned() []uint64
	// Displaced returns the hashes of the targets that an Update may move
	// though it neither adds nor removes them (those the load bounds keep off
	// their first choice), in no particular order. A target whose member an
	// Update changes is among its added targets, or in Displaced before or
	// after it: a caller that follows the assignment by changes asks for no
	// member beyond those. It is short: bounds rarely bind.
	Displaced() []uint64
	// Counts counts the targets the placement limits concern.
	Counts() Counts
	// MovedByMembers returns the hashes of the targets whose member the last
	// SetMembers may have changed, in no particular order and possibly
	// repeated: every target it changed is among them. Among them are a
	// target of a member that left, the newcomers' targets, and the pinned
	// targets. It is valid until the next call that changes members or
	// targets. ok is false when the strategy does not follow what a change
	// of members moves (per-node, least-weighted): the caller then asks for
	// every target's member.
	MovedByMembers() (hashes []uint64, ok bool)
	// Measure replaces what the members measured of their targets: the
	// series-weighted strategy and the series limit read it. A target not
	// measured weighs the average of the measured ones, 1 while none is.
	Measure(measurements []Measurement)
	// SeriesLoads returns each member's series load: the sum of the weights
	// of its targets, pinned ones included. Every member has an entry. It
	// costs a pass over the targets.
	SeriesLoads() map[string]int64
	// Weight returns a target's weight: its measured series per scrape, or
	// the average of the measured targets' (1 while none is). It changes
	// only with Measure.
	Weight(hash uint64) int64
}

// Counts are the targets the placement limits concern.
type Counts struct {
	// OverLimit counts the unassigned targets that a member could take but
	// for the limit: every member they may go to holds as many targets as
	// WithLimit allows. They are among Unassigned.
	OverLimit int
	// Pinned counts the targets on the member they are pinned to, and
	// PinnedToNonMember those pinned to an identity that is no member,
	// which are placed as if they had no pin.
	Pinned, PinnedToNonMember int
}

// Option configures an Allocator.
type Option func(*options)

type options struct {
	fallback    string
	limit       int
	seriesLimit int64
}

// WithFallback names the strategy for the targets per-node cannot place
// because they have no node, as the Target Allocator's
// allocation_fallback_strategy: consistent-hashing, least-weighted, or "" to
// leave them unassigned (the default). A target on a node that runs no member
// stays unassigned whatever the fallback, as in the Target Allocator. Other
// strategies ignore it.
func WithFallback(strategy string) Option {
	return func(o *options) { o.fallback = strategy }
}

// WithLimit bounds the targets of each member, pinned ones included, as the
// extension's max_targets_per_collector does: a target that no member may
// take without going beyond it stays unassigned, and Counts counts it. 0,
// the default, sets no limit.
func WithLimit(maxTargets int) Option {
	return func(o *options) { o.limit = maxTargets }
}

// WithSeriesLimit bounds the series load of each member, pinned targets
// included, as the extension's max_series_per_collector does: a member
// keeps the targets that score it highest, as rendezvous hashing scores
// them, while they fit, and the others stay unassigned and are counted
// (Counts.OverLimit). series-weighted places a target only where it fits
// first. 0, the default, sets no limit.
func WithSeriesLimit(maxSeries int64) Option {
	return func(o *options) { o.seriesLimit = maxSeries }
}

// New returns an empty Allocator of the named strategy; "" names the default,
// consistent-hashing. It fails on an unknown strategy or fallback, naming the
// valid ones, and on a negative limit.
func New(strategy string, opts ...Option) (Allocator, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.limit < 0 {
		return nil, fmt.Errorf("the limit of targets per member, %d, is negative", o.limit)
	}
	if o.seriesLimit < 0 {
		return nil, fmt.Errorf("the limit of series per member, %d, is negative", o.seriesLimit)
	}
	ms := &measurements{avg: 1}
	wrap := func(s strategyAllocator) Allocator { return newPinning(s, o.limit, o.seriesLimit, ms) }
	var fallback strategyAllocator
	switch o.fallback {
	case "":
	case ConsistentHashing:
		fallback = newConsistentHashing()
	case LeastWeighted:
		fallback = newLeastWeighted()
	default:
		return nil, fmt.Errorf("unknown allocation fallback strategy %q: valid fallback strategies are %s, %s, or none",
			o.fallback, ConsistentHashing, LeastWeighted)
	}
	switch strategy {
	case ConsistentHashing, "":
		return wrap(newConsistentHashing()), nil
	case LeastWeighted:
		return wrap(newLeastWeighted()), nil
	case PerNode:
		return wrap(newPerNode(fallback)), nil
	case SeriesWeighted:
		return wrap(newSeriesWeighted(ms)), nil
	}
	return nil, fmt.Errorf("unknown allocation strategy %q: valid strategies are %s",
		strategy, strings.Join(Strategies(), ", "))
}

// strategyAllocator is a strategy as New wraps it: it places the targets the
// pins leave to it, within the budget its wrapper sets.
type strategyAllocator interface {
	Strategy() string
	SetMembers(members []Member) error
	SetTargets(targets []Target)
	Update(added []Target, removed []uint64)
	MemberOf(hash uint64) (member string, ok bool)
	Assignment() map[string][]uint64
	Unassigned() []uint64
	Displaced() []uint64
	// setBudget hands the strategy its budget, which the caller keeps up to
	// date, in place, before each call that changes members or targets.
	setBudget(b *budget)
	// has reports whether the strategy holds the target.
	has(hash uint64) bool
	// overLimit counts the unassigned targets that a member could take but
	// for the budget's room.
	overLimit() int
	// remeasure is called after the measurements changed.
	remeasure()
}

// membersMover is a strategy that follows what its SetMembers moves.
type membersMover interface {
	// movedByMembers returns the hashes of the targets whose member the
	// last SetMembers may have changed: all those it changed, and few others.
	movedByMembers() []uint64
}

// memberSet is the member list every strategy keeps: sorted by name, so that a
// member's index orders ties the same way in every process.
type memberSet struct {
	names []string
	nodes []string
	seeds []uint64 // seeds[i] = mix(fnv1a(names[i])): the member's hash
	index map[string]int32
}

func newMemberSet(members []Member) (memberSet, error) {
	sorted := slices.Clone(members)
	slices.SortFunc(sorted, func(a, b Member) int { return strings.Compare(a.Identity, b.Identity) })
	s := memberSet{
		names: make([]string, len(sorted)),
		nodes: make([]string, len(sorted)),
		seeds: make([]uint64, len(sorted)),
		index: make(map[string]int32, len(sorted)),
	}
	for i, m := range sorted {
		if m.Identity == "" {
			return memberSet{}, fmt.Errorf("member %d has an empty identity", i)
		}
		if i > 0 && sorted[i-1].Identity == m.Identity {
			return memberSet{}, fmt.Errorf("member %q appears twice", m.Identity)
		}
		s.names[i], s.nodes[i], s.seeds[i] = m.Identity, m.Node, mix(fnv1a(m.Identity))
		s.index[m.Identity] = int32(i)
	}
	return s, nil
}

func (s memberSet) len() int { return len(s.names) }

// remap returns, for each index of s, the index of the same member in next or
// -1, and the indices of next's members that s does not have.
func (s memberSet) remap(next memberSet) (old2new []int32, added []int32) {
	old2new = make([]int32, s.len())
	for i, name := range s.names {
		j, ok := next.index[name]
		if !ok {
			j = -1
		}
		old2new[i] = j
	}
	for j, name := range next.names {
		if _, ok := s.index[name]; !ok {
			added = append(added, int32(j))
		}
	}
	return old2new, added
}

// assignment builds the result of Assignment from per-slot hashes and members.
func (s memberSet) assignment(n int, slot func(i int) (hash uint64, member int32)) map[string][]uint64 {
	counts := make([]int, s.len())
	for i := range n {
		if _, o := slot(i); o >= 0 {
			counts[o]++
		}
	}
	byIndex := make([][]uint64, s.len())
	for m, c := range counts {
		byIndex[m] = make([]uint64, 0, c)
	}
	for i := range n {
		if h, o := slot(i); o >= 0 {
			byIndex[o] = append(byIndex[o], h)
		}
	}
	out := make(map[string][]uint64, s.len())
	for m, name := range s.names {
		out[name] = byIndex[m]
	}
	return out
}

// mix is the 64-bit finaliser of MurmurHash3: a bijection whose every output
// bit depends on every input bit. Rendezvous scores are mix(mix(target) ^ seed).
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// unmix inverts mix: the xor-shifts by 33 are their own inverses, and the
// multipliers' inverses modulo 2^64 undo the multiplications.
func unmix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0x9cb4b2f8129337db
	x ^= x >> 33
	x *= 0x4f74430c22a54005
	x ^= x >> 33
	return x
}

// fnv1a is FNV-1a 64 of s, inline to avoid an allocation per member.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// lookupWork is what eachPart counts for one MemberOf: a lookup in a
// table of a million targets misses the cache, dozens of scores' time.
const lookupWork = 16

// MembersOf returns the member of each of n targets, the i-th's hash
// being hash(i), as MemberOf says ("" for none), looked up on every core
// when they are many (a job's first allocation at a million targets). No
// mutating method of a may run meanwhile.
func MembersOf(a Allocator, n int, hash func(i int) uint64) []string {
	out := make([]string, n)
	eachPart(n, n*lookupWork, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i], _ = a.MemberOf(hash(i))
		}
	})
	return out
}

// parallelWork is the least work (in scores, a few nanoseconds each) that
// eachPart spreads over more than one core: less costs less than starting
// goroutines.
const parallelWork = 1 << 20

// eachPart calls part for contiguous ranges covering [0, n), on every core
// (GOMAXPROCS) when work, the scores they compute in all, is large enough:
// ranking 1M targets among 100 members, or a fallback's among 1000. The
// ranges must be independent: part writes only their own elements.
func eachPart(n, work int, part func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if work < parallelWork || workers <= 1 {
		part(0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Go(func() { part(lo, hi) })
	}
	wg.Wait()
}
