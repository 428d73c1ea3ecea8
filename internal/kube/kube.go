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

// RESTConfig returns the client configuration for auth type t; kubeContext
// selects a kubeconfig context and is ignored for the service account.
func RESTConfig(t AuthType, kubeContext string) (*rest.Config, error) {
	switch t {
	case AuthServiceAccount:
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("service account config: %w", err)
		}
		return cfg, nil
	case AuthKubeConfig:
		cfg, err := kubeConfig(kubeContext).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig: %w", err)
		}
		return cfg, nil
	}
	return nil, t.Validate()
}

// Client returns a clientset for auth type t, identified to the API server as userAgent.
func Client(t AuthType, kubeContext, userAgent string) (kubernetes.Interface, error) {
	cfg, err := RESTConfig(t, kubeContext)
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(rest.AddUserAgent(cfg, userAgent))
}

// Namespace returns the namespace a member runs in when none is configured:
// POD_NAMESPACE, then the service account's namespace, then (for kubeConfig)
// the namespace of the kubeconfig context, "default" if it names none, as
// kubectl does.
func Namespace(t AuthType, kubeContext string) (string, error) {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns, nil
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns, nil
		}
	}
	if t == AuthKubeConfig {
		ns, _, err := kubeConfig(kubeContext).Namespace()
		if err != nil {
			return "", fmt.Errorf("kubeconfig: %w", err)
		}
		return ns, nil
	}
	return "", errors.New("no POD_NAMESPACE and no service account namespace file")
}

func kubeConfig(kubeContext string) clientcmd.ClientConfig {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(),
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext},
	)
}

// KubeconfigFile returns the kubeconfig file that auth type kubeConfig
// reads first: the first of KUBECONFIG's paths, else ~/.kube/config.
func KubeconfigFile() string {
	return clientcmd.NewDefaultClientConfigLoadingRules().GetLoadingPrecedence()[0]
}
