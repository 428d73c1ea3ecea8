// Package testpki makes real certificates for tests: a CA, and a key pair
// for loopback addresses that serves and authenticates as a client, the way one
// Secret mounted in every replica of a StatefulSet would.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a CA and certificates it issued, as files and as Go values.
type PKI struct {
	// CAFile is the CA certificate (PEM).
	CAFile string
	// CertFile and KeyFile are a key pair for 127.0.0.1 to 127.0.0.9 (in-
	// process replicas that listen on the same port each on an address of
	// its own), good for serving and for client authentication.
	CertFile, KeyFile string
	// Pool holds the CA.
	Pool *x509.CertPool
	// Client is a client certificate issued by the CA.
	Client tls.Certificate
	// Stranger is a client certificate issued by another CA.
	Stranger tls.Certificate
}

// New makes a PKI in a temporary directory of t.
func New(t testing.TB) PKI {
	t.Helper()
	dir := t.TempDir()
	ca, caKey, caDER := authority(t, "test CA")
	other, otherKey, _ := authority(t, "another CA")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := PKI{Pool: x509.NewCertPool()}
	p.Pool.AddCert(ca)
	p.CAFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	certPEM, keyPEM := issue(t, ca, caKey, "replica", replicaIPs...)
	p.CertFile, p.KeyFile = write("tls.crt", certPEM), write("tls.key", keyPEM)
	p.Client = pair(t)(issue(t, ca, caKey, "client"))
	p.Stranger = pair(t)(issue(t, other, otherKey, "stranger"))
	return p
}

// replicaIPs are the addresses the replicas' certificate is for.
var replicaIPs = func() []net.IP {
	var ips []net.IP
	for i := 1; i <= 9; i++ {
		ips = append(ips, net.IPv4(127, 0, 0, byte(i)))
	}
	return ips
}()

func authority(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, der
}

// issue makes a key pair signed by ca, for serving ips and for clients.
func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, ips ...net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// pair parses what issue returns into a tls.Certificate.
func pair(t testing.TB) func(certPEM, keyPEM []byte) tls.Certificate {
	return func(certPEM, keyPEM []byte) tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
