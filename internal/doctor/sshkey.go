package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/crypto/ssh"
)

// checkSSHKey checks banger's private key (config ssh_key or the default
// under the config dir): private (0600), unencrypted and parseable. A
// missing key is fine: the daemon creates it on first use.
func checkSSHKey(path string) Check {
	c := Check{Name: "ssh key"}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.Status, c.Detail = Warn, path+" does not exist yet; it is created on first use"
		return c
	case err != nil:
		c.Status, c.Detail = Fail, fmt.Sprintf("cannot read %s: %v", path, err)
		c.Fix = "make " + path + " readable by this user (chown $USER " + path + ")"
		return c
	case !fi.Mode().IsRegular():
		c.Status, c.Detail = Fail, path+" is not a regular file"
		c.Fix = "move " + path + " aside (banger creates a new key on first use) or set ssh_key to your key's path"
		return c
	}
	data, err := os.ReadFile(path)
	if err != nil {
		c.Status, c.Detail = Fail, fmt.Sprintf("cannot read %s: %v", path, unwrapPath(err))
		c.Fix = "make " + path + " readable by this user (chown $USER " + path + ")"
		return c
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		c.Status = Fail
		var pe *ssh.PassphraseMissingError
		if errors.As(err, &pe) {
			c.Detail = path + " is protected by a passphrase; banger needs an unencrypted key"
			c.Fix = "ssh-keygen -p -N '' -f " + path + " (removes the passphrase), or set ssh_key to another key"
		} else {
			c.Detail = fmt.Sprintf("%s is not a usable private key: %v", path, err)
			c.Fix = "mv " + path + " " + path + ".bad (banger creates a new key on first use), or set ssh_key to your key's path"
		}
		return c
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		c.Status = Fail
		c.Detail = fmt.Sprintf("%s has mode %04o: ssh refuses a private key others can read", path, perm)
		c.Fix = "chmod 600 " + path
		return c
	}
	c.Status = Pass
	c.Detail = fmt.Sprintf("%s (%s %s)", path, signer.PublicKey().Type(), ssh.FingerprintSHA256(signer.PublicKey()))
	return c
}
