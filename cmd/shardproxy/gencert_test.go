package main

import (
	"bytes"
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	var out, errb bytes.Buffer
	if rc := run([]string{"gen-cert", "-dir", dir, "-hosts", "db.example.com, 10.0.0.5"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "sslrootcert="+filepath.Join(dir, "ca.crt")) {
		t.Errorf("output: %s", out.String())
	}
	if rc := run([]string{"gen-cert", "-dir", dir, "-hosts", ""}, &out, &errb); rc != 2 {
		t.Errorf("no hosts: rc %d", rc)
	}
}
