package ca

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLoadOrCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{KeyFile: 0o600, CertFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, %v; want %v", f, fi.Mode().Perm(), err, mode)
		}
	}
	if !c.Certificate().IsCA || c.Certificate().PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("ca cert: %+v", c.Certificate())
	}
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(again.CertPEM()) != string(c.CertPEM()) {
		t.Error("a second load made a new CA")
	}
	// A key without its certificate (crash between the writes): new CA.
	os.Remove(filepath.Join(dir, CertFile))
	fresh, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if string(fresh.CertPEM()) == string(c.CertPEM()) {
		t.Error("the CA was not regenerated")
	}
	// Garbage on disk is an error, not a silent new CA.
	os.WriteFile(filepath.Join(dir, CertFile), []byte("garbage"), 0o644)
	if _, err := LoadOrCreate(dir); err == nil {
		t.Error("a garbage certificate was accepted")
	}
}

// serveTLS accepts one connection on 127.0.0.1 with cert and writes "ok".
func serveTLS(t *testing.T, cert *tls.Certificate) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() == nil {
				io.WriteString(tc, "ok")
			}
			tc.Close()
		}
	}()
	return ln.Addr().String()
}

func TestLeafVerifies(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CertPEM())
	for _, name := range []string{"api.example.test", "127.0.0.1"} {
		leaf, err := c.Leaf(name)
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLS(t, leaf)
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Fatalf("client trusting only the CA refused the leaf for %s: %v", name, err)
		}
		b, _ := io.ReadAll(conn)
		conn.Close()
		if string(b) != "ok" {
			t.Errorf("read %q", b)
		}
		// The leaf is for that name only.
		if _, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "other.example.test"}); err == nil {
			t.Errorf("leaf for %s verified for another name", name)
		}
		if d := leaf.Leaf.NotAfter.Sub(leaf.Leaf.NotBefore); d > LeafValidity+2*time.Hour {
			t.Errorf("leaf validity %v", d)
		}
	}
	// A client with the system roots only does not trust it.
	leaf, _ := c.Leaf("api.example.test")
	if _, err := tls.Dial("tcp", serveTLS(t, leaf), &tls.Config{ServerName: "api.example.test"}); err == nil {
		t.Error("a client without the banger CA trusted a minted leaf")
	}
}

func TestLeafCache(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c.Now = func() time.Time { return now }
	c.CacheSize = 3
	a1, _ := c.Leaf("a.test")
	a2, _ := c.Leaf("a.test")
	if a1 != a2 {
		t.Error("a cached leaf was minted again")
	}
	for i := 0; i < 5; i++ {
		c.Leaf(fmt.Sprintf("n%d.test", i))
	}
	if n := c.CachedLeaves(); n != 3 {
		t.Errorf("cache holds %d leaves, cap 3", n)
	}
	b1, _ := c.Leaf("b.test")
	now = now.Add(LeafValidity * 4 / 5) // less than a quarter left
	b2, _ := c.Leaf("b.test")
	if b1 == b2 || !b2.Leaf.NotAfter.After(b1.Leaf.NotAfter) {
		t.Error("a leaf near its expiry was served from the cache")
	}
	if _, err := c.Leaf(""); err == nil {
		t.Error("empty name minted")
	}
}
