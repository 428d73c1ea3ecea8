package targetallocatorextension

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/extension/extensiontest"

	"github.com/embedded-ta/embedded-ta/extension/targetallocatorextension/internal/metadata"
	"github.com/embedded-ta/embedded-ta/internal/testpki"
)

// Start reads the https files before it listens, and a file it cannot use
// stops it with the key that names the file.
func TestStartNamesTheHTTPSFileItCannotUse(t *testing.T) {
	t.Setenv("POD_NAME", "otcta-collector-0")
	t.Setenv("POD_NAMESPACE", "ns")
	t.Setenv("POD_IP", "127.0.0.1")
	pki := testpki.New(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a certificate\n"), 0o600))
	unreadable := filepath.Join(dir, "unreadable.pem")
	require.NoError(t, os.WriteFile(unreadable, []byte("x"), 0o000))
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name             string
		ca, cert, key    string
		wantKey, wantErr string
	}{
		{"missing cert", pki.CAFile, missing, pki.KeyFile, "https::tls_cert_file_path: ", "no such file"},
		{"missing key", pki.CAFile, pki.CertFile, missing, "https::tls_key_file_path: ", "no such file"},
		{"missing CA", missing, pki.CertFile, pki.KeyFile, "https::ca_file_path: ", "no such file"},
		{"no CA in the file", garbage, pki.CertFile, pki.KeyFile, "https::ca_file_path: ", "holds no PEM certificate"},
		{"cert and key no pair", pki.CAFile, pki.CertFile, pki.CertFile, "https::tls_cert_file_path, https::tls_key_file_path: ", "no key pair"},
	}
	if os.Geteuid() != 0 { // root reads any file
		tests = append(tests, struct {
			name             string
			ca, cert, key    string
			wantKey, wantErr string
		}{"unreadable cert", pki.CAFile, unreadable, pki.KeyFile, "https::tls_cert_file_path: ", "permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			cfg.HTTPS = HTTPSConfig{Enabled: true, ListenAddr: "127.0.0.1:18443", CAFilePath: tt.ca, TLSCertFilePath: tt.cert, TLSKeyFilePath: tt.key}
			require.NoError(t, cfg.Validate(), "Validate reads no file")
			ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), cfg)
			require.NoError(t, err)
			err = ext.Start(context.Background(), componenttest.NewNopHost())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantKey)
			assert.Contains(t, err.Error(), tt.wantErr)
			require.NoError(t, ext.Shutdown(context.Background()))
		})
	}
}
