package updater

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParsePublicKey decodes a PEM "PUBLIC KEY" block (PKIX) holding an ECDSA
// P-256 key.
func ParsePublicKey(pemData []byte) (*ecdsa.PublicKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil, errors.New("public key: no PEM block found")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("public key: PEM block is %q, want \"PUBLIC KEY\"", block.Type)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("public key: %T is not an ECDSA key", key)
	}
	if ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("public key: curve %s is not P-256", ec.Curve.Params().Name)
	}
	return ec, nil
}

// VerifySignature checks sig, an ASN.1 DER ECDSA signature of SHA-256(data)
// either raw or base64 encoded, against the PEM public key.
func VerifySignature(publicKeyPEM, data, sig []byte) error {
	key, err := ParsePublicKey(publicKeyPEM)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(data)
	if len(sig) == 0 {
		return errors.New("signature is empty")
	}
	if ecdsa.VerifyASN1(key, digest[:], sig) {
		return nil
	}
	// Not a valid raw DER signature: it may be the same bytes base64
	// encoded (cosign writes them so; line breaks are ignored).
	trimmed := bytes.TrimSpace(sig)
	decoded := make([]byte, base64.StdEncoding.DecodedLen(len(trimmed)))
	if n, err := base64.StdEncoding.Decode(decoded, trimmed); err == nil {
		if ecdsa.VerifyASN1(key, digest[:], decoded[:n]) {
			return nil
		}
	}
	return errors.New("signature does not match the release public key")
}
