// Package kube builds Kubernetes client configuration the way a collector
// component is configured: from the pod's service account or a kubeconfig.
package kube

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// AuthType says where the client's credentials come from.
type AuthType string

const (
	// AuthServiceAccount uses the pod's mounted service account token.
	AuthServiceAccount AuthType = "serviceAccount"
	// AuthKubeConfig uses the kubeconfig named by KUBECONFIG (or ~/.kube/config).
	AuthKubeConfig AuthType = "kubeConfig"
)

// serviceAccountNamespaceFile holds the namespace of the pod's service account.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// Validate reports whether t is a known auth type.
func (t AuthType) Validate() error {
	switch t {
	case AuthServiceAccount, AuthKubeConfig:
		return nil
	}
	return fmt.Errorf("unknown auth type %q, want %q or %q", t, AuthServiceAccount, AuthKubeConfig)
}

// Auth says where a client's credentials come from.
type Auth struct {
	Type AuthType
	// Context selects a kubeconfig context for AuthKubeConfig; "" is the
	// current one.
	Context string
	// File is the kubeconfig file for AuthKubeConfig; "" reads KUBECONFIG,
	// else ~/.kube/config.
	File string
}

// RESTConfig returns the client configuration for a; the service account
// ignores Context and File.
func (a Auth) RESTConfig() (*rest.Config, error) {
	switch a.Type {
	case AuthServiceAccount:
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("service account config: %w", err)
		}
		return cfg, nil
	case AuthKubeConfig:
		cfg, err := a.kubeConfig().ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		return cfg, nil
	}
	return nil, a.Type.Validate()
}

// Client returns a clientset for a, identified to the API server as userAgent.
func (a Auth) Client(userAgent string) (kubernetes.Interface, error) {
	cfg, err := a.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rest.AddUserAgent(cfg, userAgent))
}

// Namespace returns the namespace a member runs in when none is configured:
// POD_NAMESPACE, then the service account's namespace, then (for kubeConfig)
// the namespace of the kubeconfig context, "default" if it names none, as
// kubectl does.
func (a Auth) Namespace() (string, error) {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns, nil
		}
	}
	if a.Type == AuthKubeConfig {
		ns, _, err := a.kubeConfig().Namespace()
		if err != nil {
			return "", fmt.Errorf("kubeconfig: %w", err)
		}
		return ns, nil
	}
	return "", errors.New("no POD_NAMESPACE and no service account namespace file")
}

func (a Auth) kubeConfig() clientcmd.ClientConfig {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if a.File != "" {
		rules = &clientcmd.ClientConfigLoadingRules{ExplicitPath: a.File}
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: a.Context})
}

// KubeconfigFile returns the kubeconfig file that AuthKubeConfig reads
// first: File, else the first of KUBECONFIG's paths, else ~/.kube/config.
func (a Auth) KubeconfigFile() string {
	if a.File != "" {
		return a.File
	}
	return clientcmd.NewDefaultClientConfigLoadingRules().GetLoadingPrecedence()[0]
}
