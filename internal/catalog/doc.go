// Package catalog lets banger download kernels and images from a catalog
// and reads and writes the image bundle format.
//
// A catalog is a JSON document listing kernels (a Debian linux-image .deb
// or a zstd-compressed tar of a `dpkg -x` style tree) and images (bundles),
// each with the URL, size and SHA-256 of the file to download. One catalog
// is built into banger (see Embedded); Load reads others from a file or an
// http(s) URL, resolving relative entry URLs against the catalog's own
// location so a catalog can be published next to its files.
//
// A Fetcher downloads a file into a directory under a content-addressed
// name, checking its status, length and SHA-256 before atomically
// renaming it into place; a failed download leaves nothing behind.
//
// A bundle is a zstd-compressed tar holding manifest.json (first) and
// rootfs.ext4. WriteBundle streams one from a (typically sparse) root
// filesystem; ReadBundle checks it against its manifest and writes the
// root filesystem back sparsely.
package catalog
