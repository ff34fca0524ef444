//go:build !linux

package network

import (
	"errors"
	"fmt"
)

// NewHost is only implemented on Linux.
func NewHost(cfg Config) (Host, error) {
	return nil, fmt.Errorf("new host: %w", errors.ErrUnsupported)
}
