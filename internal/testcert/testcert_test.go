package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		names  []string
		verify []string // names the certificate must be valid for
	}{
		{[]string{"mx.test"}, []string{"mx.test"}},
		{[]string{"127.0.0.1"}, []string{"127.0.0.1"}},
		{[]string{"mx.test", "::1", "other.test"}, []string{"mx.test", "::1", "other.test"}},
	}
	for _, tt := range tests {
		cert := New(t, tt.names...)
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if leaf.Subject.CommonName != tt.names[0] {
			t.Errorf("%v: common name %q", tt.names, leaf.Subject.CommonName)
		}
		roots := x509.NewCertPool()
		roots.AddCert(leaf)
		for _, n := range tt.verify {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots}); err != nil {
				t.Errorf("%v: not valid for %s: %v", tt.names, n, err)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "elsewhere.test", Roots: roots}); err == nil {
			t.Errorf("%v: valid for elsewhere.test too", tt.names)
		}
	}
}

func TestWriteFiles(t *testing.T) {
	certFile, keyFile := WriteFiles(t, t.TempDir(), "mx.test")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.Leaf.VerifyHostname("mx.test"); err != nil {
		t.Error(err)
	}
}
