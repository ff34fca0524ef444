package catalog

// lseek whence values finding data and holes (<linux/fs.h>).
const (
	seekData     = 3
	seekHole     = 4
	haveSeekHole = true
)
