package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/embedded-ta/embedded-ta/internal/status"
)

// cutOff reports whether this member can count on neither its own member
// Lease nor the leader Lease as it last read them: it cannot renew (the API
// server is out of its reach) and the record names no live leader (it
// stepped down, or the leader's lease ran out by its clock). The others may
// have elected a leader it cannot see; only its peers can tell.
func (e *allocatorExtension) cutOff() bool {
	return !e.members.Joined() && !e.elector.LeaderLive()
}

// askPeers runs while the member runs. Every retry_period while it is cut
// off, it asks the peers it knows for their /status and keeps the view of
// the one that leads (status.LeaderAmong), which View then names as the
// leader: the relay asks that leader for this member's shares, and the
// leader, which dropped this member with its Lease, answers that it is none,
// so that its shares stop while the others scrape them. Nobody leads while
// the whole group is cut off: then the shares stay as they are.
func (e *allocatorExtension) askPeers(ctx context.Context, client *http.Client, scheme string) {
	ticker := time.NewTicker(e.cfg.Lease.RetryPeriod)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if !e.cutOff() {
			if e.peerLeader.Swap(nil) != nil {
				e.set.Logger.Info("Reads the leader Lease again", zap.String("group", e.s.group))
			}
			continue
		}
		leader, ok := status.LeaderAmong(e.s.group, e.peerViews(ctx, client, scheme))
		if !ok {
			continue // keep what the last round found, if anything
		}
		if old := e.peerLeader.Swap(&leader); old == nil || old.Identity != leader.Identity || old.Epoch != leader.Epoch {
			e.set.Logger.Warn("Cannot read the leader Lease; relaying to the leader its peers found",
				zap.String("group", e.s.group), zap.String("leader", leader.Identity), zap.Int("epoch", leader.Epoch))
		}
	}
}

// peerViews asks every peer this member knows, at once, for its view of
// itself; those that do not answer within retry_period are left out.
func (e *allocatorExtension) peerViews(ctx context.Context, client *http.Client, scheme string) []status.View {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Lease.RetryPeriod)
	defer cancel()
	var (
		mu    sync.Mutex
		views []status.View
		asked sync.WaitGroup
	)
	for _, m := range e.members.Known() {
		if m.Identity == e.s.identity || m.Endpoint == "" {
			continue
		}
		asked.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+m.Endpoint+"/status", http.NoBody)
			if err != nil {
				return
			}
			resp, err := client.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			var v status.View
			if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&v) != nil {
				return
			}
			mu.Lock()
			views = append(views, v)
			mu.Unlock()
		})
	}
	asked.Wait()
	return views
}
