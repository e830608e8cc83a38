package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"
)

// TestGenerateVerifies checks that the server certificate verifies for
// its hosts against the CA, and not for another host.
func TestGenerateVerifies(t *testing.T) {
	dir := t.TempDir()
	f, err := Generate(dir, []string{"localhost", "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(f.CA)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	for _, tc := range []struct {
		host string
		ok   bool
	}{{"localhost", true}, {"127.0.0.1", true}, {"example.com", false}} {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: tc.host})
		if (err == nil) != tc.ok {
			t.Errorf("verify for %s: %v, want ok=%v", tc.host, err, tc.ok)
		}
	}
	if st, _ := os.Stat(f.Key); st.Mode().Perm() != 0o600 {
		t.Errorf("server.key mode %v, want 0600", st.Mode().Perm())
	}
}

func TestClientCertificate(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Client("app", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "app" {
		t.Fatalf("CN %q", leaf.Subject.CommonName)
	}
	other, _ := NewCA("other", time.Hour)
	roots2 := x509.NewCertPool()
	roots2.AddCert(other.Cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots2, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("verified against another CA")
	}
}
