// Package sshkeys manages banger's own SSH material for use with the stock
// OpenSSH client: the user's key pair for logging into VMs, a known_hosts
// file that only banger writes, the generated ssh config with one Host
// block per VM, and the single Include line that makes ~/.ssh/config read
// it. Nothing here touches ~/.ssh/known_hosts or the user's keys.
package sshkeys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/internal/fsutil"
)

// KeyComment is the comment of the key EnsureKey creates and of the
// authorized_keys line it returns.
const KeyComment = "banger"

// EnsureKey loads or creates the key pair at path (the private key, mode
// 0600, in OpenSSH format) and path+".pub", and returns the public key as
// an authorized_keys line ("ssh-ed25519 AAAA... banger", no newline).
//
// A new key is ed25519; an existing key of any unencrypted type is used as
// it is. The directory is created (0700) when missing, a private key
// readable by others is made 0600 (ssh refuses it otherwise), and the .pub
// file is rewritten when it is missing or does not match the private key.
// Two processes racing to create the key end up with the same one: the
// private key is published with a hard link, which never overwrites.
func EnsureKey(path string) (pub string, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create key directory: %w", err)
	}
	signer, err := loadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		signer, err = createKey(path)
	}
	if err != nil {
		return "", err
	}
	pub = authorizedLine(signer.PublicKey(), KeyComment)
	if cur, err := os.ReadFile(path + ".pub"); err != nil || strings.TrimSpace(string(cur)) != pub {
		if err := writeAtomic(path+".pub", []byte(pub+"\n"), 0o644); err != nil {
			return "", fmt.Errorf("write public key: %w", err)
		}
	}
	return pub, nil
}

// loadKey parses the private key at path and tightens its mode if needed.
func loadKey(path string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		var pe *ssh.PassphraseMissingError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("ssh key %s is protected by a passphrase; banger needs an unencrypted key", path)
		}
		return nil, fmt.Errorf("parse ssh key %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("restrict permissions of %s: %w", path, err)
		}
	}
	return signer, nil
}

// createKey generates an ed25519 key and publishes it at path unless
// another process got there first, in which case that key is loaded.
func createKey(path string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, KeyComment)
	if err != nil {
		return nil, fmt.Errorf("encode ssh key: %w", err)
	}
	if err := writeExclusive(path, pem.EncodeToMemory(block), 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadKey(path)
		}
		return nil, fmt.Errorf("write ssh key: %w", err)
	}
	return ssh.NewSignerFromKey(priv)
}

// authorizedLine formats key as "TYPE BASE64[ comment]".
func authorizedLine(key ssh.PublicKey, comment string) string {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(key)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return line
}

// writeAtomic replaces path with data (fsutil.AtomicWriteFile).
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	return fsutil.AtomicWriteFile(path, data, perm)
}

// writeExclusive creates path with data, complete or not at all; it fails
// with fs.ErrExist if path exists (fsutil.WriteFileExclusive).
func writeExclusive(path string, data []byte, perm fs.FileMode) error {
	return fsutil.WriteFileExclusive(path, data, perm)
}
