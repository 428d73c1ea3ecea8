// Package report is what a member tells its leader about its own scrapes:
// one small document, sent by a follower as POST /report on the leader's
// allocator API and handed over in-process by the leader's own receiver.
// It is the one place for what members report; a field is added here, with
// its meaning, and older leaders ignore fields they do not know.
//
//	{"member": "otcta-collector-1", "fenced": true, "cutover": true, "warm_within": "20s",
//	 "warm": {"numbered": ["8d3f00a1b2c3d4e5"]}, "warm_at": {"8d3f00a1b2c3d4e5": 1795981234500},
//	 "hot_standby": false,
//	 "leaving": false, "series": {"numbered": {"51c0ffee00d4a7b9": 1234}},
//	 "held": {"numbered": ["51c0ffee00d4a7b9"]}}
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
)

// MaxBytes bounds a report's body.
const MaxBytes = 4 << 20

// Report is one member's report.
type Report struct {
	// Member is the reporting member's identity (its collector_id).
	Member string `json:"member"`
	// Fenced is true when the member's receiver fences its data per target
	// (prometheus_allocated does): only then may the leader hand it
	// warming targets, whose data it scrapes and drops.
	Fenced bool `json:"fenced,omitempty"`
	// WarmWithin is how long the member's receiver may take to scrape a
	// target that entered its share, at most (its refresh_interval plus
	// the stock receiver's delays): the leader's hand-off deadline, plus
	// the job's scrape interval.
	WarmWithin Duration `json:"warm_within,omitempty"`
	// Warm holds, by job, the warming targets (by hash, shares.WarmingLabel's
	// value) whose first scrape the member has seen since its last report
	// (for a target that came back to it soon after it left, its first by
	// a scrape loop that stays: see the receiver's fence).
	Warm map[string][]string `json:"warm,omitempty"`
	// WarmAt holds, by hash, when the scrape of a warming target of Warm
	// that the member reports began (the scrape's time, Unix milliseconds
	// on the member's clock): the leader puts the move's cut-over half an
	// interval off it, between two of the member's scrapes. A leader
	// without it takes the time the report came.
	WarmAt map[string]int64 `json:"warm_at,omitempty"`
	// HotStandby is true when the member's receiver asks to warm, besides
	// its share, the targets it would take if their member died (its
	// hot_standby setting): it scrapes them and drops their data until
	// they are its own.
	HotStandby bool `json:"hot_standby,omitempty"`
	// Leaving is true when the member stops gracefully: the leader moves
	// its targets away, make before break, and the member exports them
	// until its share is empty.
	Leaving bool `json:"leaving,omitempty"`
	// Series holds, by job and by target key (TargetKey of the target's
	// labels in the member's share), the series per scrape the member's
	// last scrape of each target of its share gave (its
	// scrape_samples_scraped): all of them, each time, so that a report
	// replaces the member's previous one.
	Series map[string]map[string]int64 `json:"series,omitempty"`
	// Cutover is true when the member's receiver splits a moved target's
	// data at its move's cut-over (shares.CutoverLabel): the leader sets
	// one only on a move between two such members.
	Cutover bool `json:"cutover,omitempty"`
	// Held holds, by job, the targets (by target key, TargetKey) of the
	// member's share as it exports them: sent to each new leader, whose
	// first allocation starts from them, so that the moves it makes are
	// made before they are broken rather than from a fresh allocation.
	Held map[string][]string `json:"held,omitempty"`
}

// TargetKey is how a report names a target of the member's share: 16 hex
// digits of a hash of its labels as the share lists them (its discovered
// labels, __address__ included), which the member and the leader both
// have.
func TargetKey(ls labels.Labels) string {
	d := xxhash.New()
	ls.Range(func(l labels.Label) {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write([]byte{0xff})
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write([]byte{0xff})
	})
	return FormatHash(d.Sum64())
}

// Duration is a time.Duration written as Go writes it ("20s").
type Duration time.Duration

// MarshalJSON writes d as a string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a string such as "20s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"20s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MaxWarmWithin bounds warm_within: a longer one would pin targets to
// their old member for that long.
const MaxWarmWithin = 10 * time.Minute

// Decode reads and validates one report from r.
func Decode(r io.Reader) (Report, error) {
	var rep Report
	dec := json.NewDecoder(io.LimitReader(r, MaxBytes+1))
	if err := dec.Decode(&rep); err != nil {
		return Report{}, fmt.Errorf("decode report: %w", err)
	}
	if dec.More() {
		return Report{}, errors.New("decode report: more than one JSON value")
	}
	return rep, rep.Validate()
}

// Validate checks the report's values; each error names its field.
func (r Report) Validate() error {
	var errs []error
	if r.Member == "" {
		errs = append(errs, errors.New("member: must not be empty"))
	}
	if d := time.Duration(r.WarmWithin); d < 0 || d > MaxWarmWithin {
		errs = append(errs, fmt.Errorf("warm_within: %s must be from 0s to %s", d, MaxWarmWithin))
	}
	for job, byKey := range r.Series {
		for key, n := range byKey {
			if _, err := ParseHash(key); err != nil {
				errs = append(errs, fmt.Errorf("series[%q]: %w", job, err))
				break
			}
			if n < 0 {
				errs = append(errs, fmt.Errorf("series[%q][%q]: %d must not be negative", job, key, n))
				break
			}
		}
	}
	for h, at := range r.WarmAt {
		if _, err := ParseHash(h); err != nil {
			errs = append(errs, fmt.Errorf("warm_at: %w", err))
			break
		}
		if at < 0 {
			errs = append(errs, fmt.Errorf("warm_at[%q]: %d must not be negative", h, at))
			break
		}
	}
	for _, f := range []struct {
		name  string
		byJob map[string][]string
	}{{"warm", r.Warm}, {"held", r.Held}} {
		for job, hashes := range f.byJob {
			for _, h := range hashes {
				if _, err := ParseHash(h); err != nil {
					errs = append(errs, fmt.Errorf("%s[%q]: %w", f.name, job, err))
					break
				}
			}
		}
	}
	return errors.Join(errs...)
}

// FormatHash writes a target's hash as reports and shares.WarmingLabel do:
// 16 hex digits.
func FormatHash(h uint64) string { return fmt.Sprintf("%016x", h) }

// ParseHash reads a hash FormatHash wrote.
func ParseHash(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("target hash %q is not 16 hex digits", s)
	}
	h, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("target hash %q is not 16 hex digits", s)
	}
	return h, nil
}
