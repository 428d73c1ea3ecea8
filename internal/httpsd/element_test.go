package httpsd

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An element is what encoding/json writes for the target's group, and its
// labels decode from it.
func TestElement(t *testing.T) {
	for _, ls := range []labels.Labels{
		labels.EmptyLabels(),
		labels.FromStrings("__address__", "10.0.0.1:80"),
		labels.FromStrings("__meta_x", "no address"),
		labels.FromStrings("__address__", "<a&b>", "__meta_q", `quote " \ `, "empty", "", "sep", "\u2028\u2029", "ctl", "\x00\t\n"),
	} {
		want, err := json.Marshal(TargetGroup{Targets: []string{ls.Get("__address__")}, Labels: ls.Map()})
		require.NoError(t, err)
		e := Encode(ls)
		assert.Equal(t, string(want), string(e))
		assert.Equal(t, ls, e.Labels())
		var sorted []labels.Label
		ls.Range(func(l labels.Label) { sorted = append(sorted, l) })
		assert.Equal(t, e, EncodeSorted(sorted))
	}
	// Invalid UTF-8 is served, and decodes, as U+FFFD.
	e := Encode(labels.FromStrings("__address__", "a\xffb"))
	assert.True(t, strings.Contains(string(e), `a\ufffdb`), string(e))
	assert.Equal(t, labels.FromStrings("__address__", "a\uFFFDb"), e.Labels())
	assert.Equal(t, labels.EmptyLabels(), Element("not json").Labels())
}
