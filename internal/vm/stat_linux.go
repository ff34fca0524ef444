package vm

import (
	"io/fs"
	"syscall"
)

// sysStat is the allocated size of fi's file, from its block count.
func sysStat(fi fs.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Blocks * 512, true
}
