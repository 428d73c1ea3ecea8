//go:build tools

// Package kube pins the Kubernetes control-plane binaries that the tests run.
// It is a module of its own so that k8s.io/kubernetes never enters the
// product's dependency graph.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
