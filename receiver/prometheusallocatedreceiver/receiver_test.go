package prometheusallocatedreceiver

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
	"github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver/internal/metadata"
)

// member is a target_allocator extension of a member whose allocator API
// does not answer.
type member struct {
	component.StartFunc
	component.ShutdownFunc
	endpoint string
}

func (m member) View() targetallocatorextension.View {
	return targetallocatorextension.View{Identity: "c-0", Group: "c", Endpoint: m.endpoint}
}

type host struct {
	component.Host
	extensions map[component.ID]component.Component
}

func (h host) GetExtensions() map[component.ID]component.Component { return h.extensions }

// Past its timeout, Start lets the stock receiver go on asking the
// allocator API; Shutdown stops it asking and waits for it.
func TestShutdownStopsAStartThatStillRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := ln.Addr().String()
	require.NoError(t, ln.Close()) // refused: the stock client retries

	cfg := createDefaultConfig().(*Config)
	cfg.Timeout = 200 * time.Millisecond
	r, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{cfg.Allocator: member{endpoint: closed}}}
	require.NoError(t, r.Start(context.Background(), h), "Start goes on after its timeout")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.Shutdown(ctx))
	select {
	case <-r.(*allocatedReceiver).started:
		t.Fatal("Shutdown returned before it received the stock Start's result")
	default:
	}
}
