package demotarget

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scrapedAt is a target whose scrapes happened at the given offsets.
func scrapedAt(base time.Time, offsets ...time.Duration) *Target {
	t := &Target{}
	for _, o := range offsets {
		t.scrapes = append(t.scrapes, base.Add(o))
	}
	return t
}

func TestDoubleScraped(t *testing.T) {
	base := time.Now()
	s := time.Second
	ms := time.Millisecond
	end := base.Add(time.Minute)

	one := scrapedAt(base, 0, s, 2*s, 3*s+50*ms, 4*s, 5*s)
	assert.Zero(t, one.DoubleScraped(base, end, s), "one scraper with jitter")

	// A second scraper, 300 ms out of phase, from 2 s to 5 s.
	two := scrapedAt(base, 0, s, 2*s, 2300*ms, 3*s, 3300*ms, 4*s, 4300*ms, 5*s, 5300*ms, 6*s, 7*s)
	assert.Equal(t, 3300*ms, two.DoubleScraped(base, end, s))
	assert.Equal(t, 1300*ms, two.DoubleScraped(base.Add(4*s), end, s), "only what falls within [from, to]")

	// Two scrapers in phase, then again after a pause: the longest stretch counts.
	pause := scrapedAt(base, 0, 10*ms, s, s+10*ms, 5*s, 5*s+10*ms, 6*s, 6*s+10*ms, 7*s, 7*s+10*ms)
	assert.Equal(t, 2010*ms, pause.DoubleScraped(base, end, s))
}

func TestTargetRecordsScrapes(t *testing.T) {
	target, err := Start("127.0.0.1:0")
	require.NoError(t, err)
	defer target.Close()
	from := time.Now()
	for range 3 {
		resp, err := http.Get("http://" + target.Addr + "/metrics")
		require.NoError(t, err)
		resp.Body.Close()
	}
	assert.Len(t, target.Scrapes(), 3)
	assert.Positive(t, target.DoubleScraped(from, time.Now(), time.Second), "three scrapes in a moment are more than one scraper")
}

// A numbered target answers the number of the interval a scrape falls in,
// the first scrape in the middle of the first.
func TestNumberedTarget(t *testing.T) {
	target, err := StartNumbered("127.0.0.1:0", time.Second)
	require.NoError(t, err)
	defer target.Close()
	number := func() string {
		resp, err := http.Get("http://" + target.Addr + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		return lines[len(lines)-1]
	}
	assert.Equal(t, "scrape_number 1", number())
	assert.Equal(t, "scrape_number 1", number(), "a second scrape in the same interval")
	time.Sleep(time.Second)
	assert.Equal(t, "scrape_number 2", number())
}

func TestSeriesTarget(t *testing.T) {
	target, err := StartSeries("127.0.0.1:0", 250)
	require.NoError(t, err)
	defer target.Close()
	resp, err := http.Get("http://" + target.Addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, 250, strings.Count(string(body), "\ndemo_series{"))
	assert.Len(t, target.Scrapes(), 1)
}
