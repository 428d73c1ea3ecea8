//go:generate mdatagen metadata.yaml

// Package prometheusallocatedreceiver is the prometheus_allocated receiver:
// it scrapes this member's share of its group's targets, as the
// target_allocator extension allocates them, with the stock prometheus
// receiver.
package prometheusallocatedreceiver // import "github.com/embedded-ta/embedded-ta/receiver/prometheusallocatedreceiver"
