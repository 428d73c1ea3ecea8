package userdocs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	// figure is a number that reads as an outcome rather than a setting: a
	// decimal or a range with a unit of time or size ("4.9 s", "2–5 s",
	// "297–300 MiB"), or an approximation ("about 5 minutes", "≈ 25 ms").
	// Settings and defaults are whole numbers ("15 s", "64 MiB") and are
	// not figures here.
	figure = regexp.MustCompile(`(?:(?:^|[^\w.])(?:\d+\.\d+|\d+(?:\.\d+)?\s*[–-]\s*\d+(?:\.\d+)?)|(?:about|roughly|around|~|≈)\s*\d+(?:\.\d+)?)\s*` +
		`(?:ns|µs|ms|s|seconds?|minutes?|min|hours?|B|KB|MB|GB|KiB|MiB|GiB|bytes?|%|s/s)(?:\W|$)`)
	// backed are the words that say where a figure comes from: a
	// measurement, a test or benchmark that asserts or measures it, or the
	// command that reproduces it.
	backed = regexp.MustCompile(`(?i)\bmeasur|\basserts?\b|\basserted\b|\bTest[A-Z]\w+|\bBenchmark[A-Z]\w+|make (?:loadtest|bench|faults|test)\b|go test\b`)
)

// paragraphs splits Markdown prose into paragraphs: runs of non-blank lines,
// each list item and heading a paragraph of its own; first says on which
// line each starts, and headings which paragraphs are headings.
func paragraphs(prose string) (texts []string, first []int, headings []bool) {
	var cur []string
	start := 0
	flush := func() {
		if len(cur) > 0 {
			texts, first = append(texts, strings.Join(cur, "\n")), append(first, start)
			headings = append(headings, strings.HasPrefix(strings.TrimSpace(cur[0]), "#"))
		}
		cur = nil
	}
	for i, line := range strings.Split(prose, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			flush()
		case strings.HasPrefix(trimmed, "- ") || strings.HasPrefix(trimmed, "#"):
			flush()
			start = i + 1
			cur = append(cur, line)
			if strings.HasPrefix(trimmed, "#") {
				flush()
			}
		default:
			if len(cur) == 0 {
				start = i + 1
			}
			cur = append(cur, line)
		}
	}
	flush()
	return texts, first, headings
}

// Every figure of the docs says where it comes from: a paragraph with a
// figure (a measured-looking number, see figure) names a measurement, a
// test or benchmark, or the command that reproduces it, or sits under
// words that do: a table under the paragraph that introduces it, any
// paragraph under the first prose paragraph (not a list item or a table)
// of its section, or under the first prose paragraph of its document (docs/performance.md declares every figure on
// it a measurement of `make loadtest` and `make bench`).
//
// What this checks is the marker, not the figure: that a reader finds next
// to each figure the word that says whether a test asserts it or how to
// measure it again. The figures themselves are the named tests' and
// commands'. Whole numbers with a unit read as settings and are not
// checked.
func TestFiguresSayWhereTheyComeFrom(t *testing.T) {
	root, err := Root()
	require.NoError(t, err)
	docs, err := Files(root)
	require.NoError(t, err)
	figures := 0 // checked, so that a broken pattern cannot pass silently
	for _, doc := range docs {
		raw, err := os.ReadFile(filepath.Join(root, doc))
		require.NoError(t, err)
		_, prose := Blocks(string(raw))
		texts, first, headings := paragraphs(prose)
		lead := -1    // the document's first paragraph
		section := -1 // the current section's first paragraph
		for i, p := range texts {
			if headings[i] {
				section = -1
				continue
			}
			// Only a paragraph of prose introduces: a list item speaks for itself.
			intro := !strings.HasPrefix(strings.TrimSpace(p), "- ") && !strings.HasPrefix(strings.TrimSpace(p), "|")
			if lead < 0 && intro {
				lead = i
			}
			if section < 0 && intro {
				section = i
			}
			found := figure.FindAllString(p, -1)
			if len(found) == 0 {
				continue
			}
			figures += len(found)
			table := strings.HasPrefix(strings.TrimSpace(p), "|") && i > 0 && !headings[i-1]
			if backed.MatchString(p) || table && backed.MatchString(texts[i-1]) ||
				section >= 0 && backed.MatchString(texts[section]) || lead >= 0 && backed.MatchString(texts[lead]) {
				continue
			}
			t.Errorf("%s:%d: %q: say which test asserts them (and how close) or that they are measured, and with which command",
				doc, first[i], found)
		}
	}
	assert.Greater(t, figures, 100, "figures checked")
}

func TestFigure(t *testing.T) {
	for _, s := range []string{"measured 4.9 s.", "2–5 s", "297–300 MiB", "about 5 minutes", "≈ 25 ms", "0.7 ms p99", "1.0–1.5 s"} {
		assert.True(t, figure.MatchString(s), s)
	}
	for _, s := range []string{"lease of 15 s", "64 MiB of an answer", "`retry_period` 2 s", "1.2 × `retry_period`", "v0.165.0 s", "10.0.0.12:8080"} {
		assert.False(t, figure.MatchString(s), s)
	}
}
