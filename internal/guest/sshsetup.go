package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// authorizeKey makes sure key is in root's authorized_keys (on the work
// disk, so it persists) and returns the guest's SSH host public keys.
func authorizeKey(key string) ([]string, error) {
	key = strings.TrimSpace(key)
	if key != "" {
		if strings.ContainsAny(key, "\n\r") {
			return nil, fmt.Errorf("authorized key must be one line")
		}
		dir := "/root/.ssh"
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		os.Chmod(dir, 0o700)
		path := filepath.Join(dir, "authorized_keys")
		b, _ := os.ReadFile(path)
		present := false
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) == key {
				present = true
			}
		}
		if !present {
			content := string(b)
			if content != "" && !strings.HasSuffix(content, "\n") {
				content += "\n"
			}
			if err := os.WriteFile(path, []byte(content+key+"\n"), 0o600); err != nil {
				return nil, err
			}
		}
		os.Chmod(path, 0o600)
	}
	return hostPublicKeys("/etc/ssh")
}
