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

// ReadSourceRules is only implemented on Linux.
func ReadSourceRules(table string) ([]SourceRule, error) {
	return nil, fmt.Errorf("read rules of table %q: %w", table, errors.ErrUnsupported)
}
