package discovery

import (
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
)

// rules apply a job's relabel rules to one target after another, as
// relabel.ProcessBuilder does, with two savings for rules that a million
// targets make costly:
//
//   - labelmap, labeldrop and labelkeep match their regex against label
//     names, which are few and the same for most targets: each rule
//     remembers what it made of a name (a match, and labelmap's new name),
//     so the regex runs once a name, not once a label.
//   - replace with the default regex (regex not set: (.*)) matches every
//     value whole: the value is the first group, and a target label and
//     replacement without "$" or a replacement of "$1" need no expansion.
//
// Every other rule is Prometheus's relabel.ProcessBuilder, one at a time.
// TestRulesAreProcessBuilder compares the two over random rules and labels.
type rules struct {
	cfgs  []*relabel.Config
	names []map[string]mapped // by rule: what the rule made of a label name
}

// mapped is what a rule that remembers label names made of one: whether
// its regex matched, and labelmap's name for the label.
type mapped struct {
	match bool
	to    string
}

// namesRemembered bounds what a rule remembers: past it, it forgets all
// (label names are rarely this many, and a rule that meets more runs its
// regex as Prometheus does).
const namesRemembered = 4096

func newRules(cfgs []*relabel.Config) *rules {
	return &rules{cfgs: cfgs, names: make([]map[string]mapped, len(cfgs))}
}

// process applies the rules to lb and reports whether the target is kept.
func (r *rules) process(lb *labels.Builder) bool {
	for i, c := range r.cfgs {
		switch c.Action {
		case relabel.LabelMap, relabel.LabelDrop, relabel.LabelKeep:
			r.byName(i, lb)
		case relabel.Replace:
			if wholeValue(c) {
				replaceWhole(c, lb)
				continue
			}
			fallthrough
		default:
			if !relabel.ProcessBuilder(lb, c) {
				return false
			}
		}
	}
	return true
}

// byName applies rule i, a labelmap, labeldrop or labelkeep, to each label
// of lb (as it was before the rule: Builder.Range ranges over a copy).
func (r *rules) byName(i int, lb *labels.Builder) {
	c, seen := r.cfgs[i], r.names[i]
	if seen == nil || len(seen) >= namesRemembered {
		seen = make(map[string]mapped)
		r.names[i] = seen
	}
	lb.Range(func(l labels.Label) {
		m, ok := seen[l.Name]
		if !ok {
			m.match = c.Regex.MatchString(l.Name)
			if m.match && c.Action == relabel.LabelMap {
				m.to = c.Regex.ReplaceAllString(l.Name, c.Replacement)
			}
			seen[l.Name] = m
		}
		switch {
		case c.Action == relabel.LabelMap && m.match:
			lb.Set(m.to, l.Value)
		case c.Action == relabel.LabelDrop && m.match, c.Action == relabel.LabelKeep && !m.match:
			lb.Del(l.Name)
		}
	})
}

// wholeValue tells a replace rule whose result needs no regex: the
// default one (regex not set; one written out is not recognised), which
// matches any value whole with the value as its first group, a target
// label without "$", and a replacement without "$" or of "$1".
func wholeValue(c *relabel.Config) bool {
	return c.Regex == relabel.DefaultRelabelConfig.Regex && !strings.Contains(c.TargetLabel, "$") &&
		(c.Replacement == "$1" || !strings.Contains(c.Replacement, "$"))
}

// replaceWhole applies a replace rule of which wholeValue holds, as
// Prometheus's relabeling does, its shortcut for an empty value included.
func replaceWhole(c *relabel.Config, lb *labels.Builder) {
	val := sourceValue(c, lb)
	if val == "" && c.Replacement != "$1" {
		lb.Set(c.TargetLabel, c.Replacement) // Prometheus's shortcut: no check of the name
		return
	}
	if !c.NameValidationScheme.IsValidLabelName(c.TargetLabel) {
		return
	}
	res := c.Replacement
	if res == "$1" {
		res = val
	}
	if res == "" {
		lb.Del(c.TargetLabel)
		return
	}
	lb.Set(c.TargetLabel, res)
}

// sourceValue is the rule's source labels' values joined by its separator.
func sourceValue(c *relabel.Config, lb *labels.Builder) string {
	if len(c.SourceLabels) == 1 {
		return lb.Get(string(c.SourceLabels[0]))
	}
	var b strings.Builder
	for i, name := range c.SourceLabels {
		if i > 0 {
			b.WriteString(c.Separator)
		}
		b.WriteString(lb.Get(string(name)))
	}
	return b.String()
}
