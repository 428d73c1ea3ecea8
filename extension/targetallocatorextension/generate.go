//go:generate mdatagen metadata.yaml

// Package targetallocatorextension is the target_allocator extension: every
// replica of a group of collectors runs it; one of them, elected through a
// Kubernetes Lease, leads the group.
package targetallocatorextension // import "github.com/embedded-ta/embedded-ta/extension/targetallocatorextension"
