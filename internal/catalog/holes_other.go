//go:build !linux

package catalog

// Hole detection is only used on Linux; elsewhere every byte is read.
const (
	seekData     = 0
	seekHole     = 0
	haveSeekHole = false
)
