package report

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecode(t *testing.T) {
	rep, err := Decode(strings.NewReader(`{"member":"a","fenced":true,"warm_within":"20s","warm":{"j":["00000000000000ff"]},"warm_at":{"00000000000000ff":1795981234500},"leaving":true,"later":1}`))
	require.NoError(t, err)
	assert.Equal(t, Report{Member: "a", Fenced: true, WarmWithin: Duration(20 * time.Second), Warm: map[string][]string{"j": {"00000000000000ff"}},
		WarmAt: map[string]int64{"00000000000000ff": 1795981234500}, Leaving: true}, rep)

	for body, want := range map[string]string{
		``:                                                      "decode report",
		`{"member":""}`:                                         "member: must not be empty",
		`{"member":"a","warm_within":"x"}`:                      "decode report",
		`{"member":"a","warm_within":5}`:                        "decode report",
		`{"member":"a","warm_within":"-1s"}`:                    "warm_within",
		`{"member":"a","warm_within":"1h"}`:                     "warm_within",
		`{"member":"a","warm":{"j":["ff"]}}`:                    `warm["j"]`,
		`{"member":"a","warm":{"j":["zzzzzzzzzzzzzzzz"]}}`:      `warm["j"]`,
		`{"member":"a"} {}`:                                     "more than one",
		`{"member":"a","warm_at":{"ff":1}}`:                     "warm_at",
		`{"member":"a","warm_at":{"00000000000000ff":-1}}`:      `warm_at["00000000000000ff"]`,
		`{"member":"a","series":{"j":{"ff":1}}}`:                `series["j"]`,
		`{"member":"a","series":{"j":{"00000000000000ff":-1}}}`: `series["j"]["00000000000000ff"]`,
	} {
		_, err := Decode(strings.NewReader(body))
		if assert.Error(t, err, body) {
			assert.Contains(t, err.Error(), want, body)
		}
	}
}

func TestHash(t *testing.T) {
	h, err := ParseHash(FormatHash(0xdeadbeef))
	require.NoError(t, err)
	assert.Equal(t, uint64(0xdeadbeef), h)
}

func TestSeries(t *testing.T) {
	rep, err := Decode(strings.NewReader(`{"member":"a","series":{"j":{"00000000000000ff":1234}}}`))
	require.NoError(t, err)
	assert.Equal(t, map[string]map[string]int64{"j": {"00000000000000ff": 1234}}, rep.Series)
}

func TestTargetKey(t *testing.T) {
	a := TargetKey(labels.FromStrings("__address__", "h:1", "k", "v"))
	assert.Len(t, a, 16)
	assert.Equal(t, a, TargetKey(labels.FromMap(map[string]string{"k": "v", "__address__": "h:1"})))
	assert.NotEqual(t, a, TargetKey(labels.FromStrings("__address__", "h:1", "k", "w")))
	assert.NotEqual(t, a, TargetKey(labels.FromStrings("__address__", "h:1k", "", "v")))
}
