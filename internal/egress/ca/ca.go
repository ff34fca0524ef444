// Package ca is banger's per-installation certificate authority for the
// egress proxy. It is created on first use (ECDSA P-256, ten years) in a
// directory of the daemon's state: ca-key.pem (0600) and ca.pem, the
// certificate the guest agent installs in every guest's trust store.
// Leaf certificates are minted on demand for the name a guest asked for
// (TLS SNI) when the proxy terminates TLS to substitute a secret; they
// live a short time (LeafValidity) and are cached with a bound.
package ca

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/fsutil"
)

// File names in the CA directory.
const (
	CertFile = "ca.pem"
	KeyFile  = "ca-key.pem"
)

const (
	// CAValidity is the lifetime of a new CA certificate.
	CAValidity = 10 * 365 * 24 * time.Hour
	// LeafValidity is the lifetime of a minted leaf certificate.
	LeafValidity = 24 * time.Hour
	// DefaultCacheSize bounds the leaf cache.
	DefaultCacheSize = 1024
)

// CA signs leaf certificates.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	leafKey *ecdsa.PrivateKey // one key for every leaf: minting is one signature

	// Now is the clock (tests move it); CacheSize bounds the leaf cache.
	Now       func() time.Time
	CacheSize int

	mu    sync.Mutex
	cache map[string]*list.Element
	lru   *list.List // of *entry, most recent first
}

type entry struct {
	name string
	cert *tls.Certificate
}

// LoadOrCreate loads the CA from dir, creating dir (0700) and a new CA if
// there is none yet. A directory with a key but no certificate (a crash
// between the two writes) gets a new CA.
func LoadOrCreate(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ca dir: %w", err)
	}
	keyPEM, kerr := os.ReadFile(filepath.Join(dir, KeyFile))
	certPEM, cerr := os.ReadFile(filepath.Join(dir, CertFile))
	if kerr == nil && cerr == nil {
		return parse(certPEM, keyPEM)
	}
	if kerr != nil && !errors.Is(kerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("read ca key: %w", kerr)
	}
	if cerr != nil && !errors.Is(cerr, fs.ErrNotExist) {
		return nil, fmt.Errorf("read ca certificate: %w", cerr)
	}
	certPEM, keyPEM, err := generate(time.Now())
	if err != nil {
		return nil, err
	}
	// Key first: a certificate on disk always has its key next to it.
	if err := fsutil.AtomicWriteFile(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write ca key: %w", err)
	}
	if err := fsutil.AtomicWriteFile(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write ca certificate: %w", err)
	}
	return parse(certPEM, keyPEM)
}

func generate(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "banger egress CA (" + host + ")", Organization: []string{"banger"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create ca certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal ca key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func parse(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("load ca: the key is not ECDSA")
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("load ca: the certificate is not a CA")
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: certPEM, leafKey: leafKey,
		Now: time.Now, CacheSize: DefaultCacheSize,
		cache: map[string]*list.Element{}, lru: list.New()}, nil
}

// CertPEM is the CA certificate in PEM, for the guest trust store.
func (c *CA) CertPEM() []byte { return append([]byte(nil), c.certPEM...) }

// Certificate is the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Leaf returns a certificate for name (a normalised host name or an IP
// literal), from the cache while it has more than a quarter of its
// lifetime left.
func (c *CA) Leaf(name string) (*tls.Certificate, error) {
	if name == "" {
		return nil, errors.New("mint certificate: empty name")
	}
	now := c.Now()
	c.mu.Lock()
	if el, ok := c.cache[name]; ok {
		e := el.Value.(*entry)
		if e.cert.Leaf.NotAfter.Sub(now) > LeafValidity/4 {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.cert, nil
		}
		c.lru.Remove(el)
		delete(c.cache, name)
	}
	c.mu.Unlock()

	cert, err := c.mint(name, now)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.cache[name]; ok { // minted concurrently
		c.lru.Remove(el)
	}
	c.cache[name] = c.lru.PushFront(&entry{name: name, cert: cert})
	max := c.CacheSize
	if max <= 0 {
		max = DefaultCacheSize
	}
	for c.lru.Len() > max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.cache, old.Value.(*entry).name)
	}
	return cert, nil
}

// CachedLeaves is the number of leaves in the cache.
func (c *CA) CachedLeaves() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *CA) mint(name string, now time.Time) (*tls.Certificate, error) {
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &c.leafKey.PublicKey, c.key)
	if err != nil {
		return nil, fmt.Errorf("mint certificate for %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mint certificate for %q: %w", name, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, c.cert.Raw}, PrivateKey: c.leafKey, Leaf: leaf}, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return n, nil
}
