// Package kernel turns a Debian kernel package (or a tree laid out like
// `dpkg -x` output) into what banger boots: an uncompressed ELF vmlinux,
// which QEMU's microvm machine loads directly through its PVH note, and a
// generated initramfs holding the guest agent as /init plus the kernel
// modules a guest needs (virtio, ext4, ...), decompressed and listed in a
// valid load order.
//
// Everything is done in pure Go: the .deb's ar and tar layers, the xz
// (with the x86 BCJ filter), gzip, zstd, lz4, bzip2 and lzma decompressors,
// the modules' dependency information (read from each module's ELF
// .modinfo section, so no modules.dep or depmod is needed) and the cpio
// archive, so importing a kernel needs neither dpkg nor kmod on the host.
package kernel
