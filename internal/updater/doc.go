// Package updater replaces the banger binaries with a signed release: it
// reads a release manifest, verifies a release's signature and checksum,
// stages the new binaries next to the installed ones, swaps them in with
// atomic renames, restarts the services and rolls back to the previous
// binaries when anything after the swap fails.
//
// # Release format
//
// A release host serves one manifest and, per release, three files. The
// manifest is JSON (at most 1 MiB):
//
//	{
//	  "schema": 1,
//	  "latest_stable": "v0.3.0",
//	  "releases": [
//	    {
//	      "version":    "v0.3.0",
//	      "date":       "2025-01-31T12:00:00Z",
//	      "archive":    "v0.3.0/banger-v0.3.0-linux-amd64.tar.gz",
//	      "sha256sums": "v0.3.0/SHA256SUMS",
//	      "signature":  "v0.3.0/SHA256SUMS.sig",
//	      "notes":      "free text"
//	    }
//	  ]
//	}
//
// schema must be 1. Every version is vMAJOR.MINOR.PATCH with an optional
// -PRERELEASE suffix (semantic versioning 2.0.0 without build metadata);
// versions are unique and latest_stable names one of them. archive,
// sha256sums and signature are URLs; relative ones resolve against the
// manifest's URL (RFC 3986), absolute ones must be http or https. date and
// notes are informational.
//
// The archive is a gzip-compressed tar file holding exactly the four
// binaries banger, bangerd, banger-agent and banger-helper as regular files
// at the top level (an optional "./" prefix is accepted; pax global headers
// are ignored; anything else - directories, links, other names, duplicates
// - makes the archive invalid).
//
// SHA256SUMS is sha256sum(1) output, one "HEX  NAME" line per file (a
// "HEX *NAME" binary-mode line is accepted too), at most 64 KiB, with a
// line whose NAME is the archive's file name (the last element of the
// archive URL's path).
//
// SHA256SUMS.sig is an ECDSA P-256 signature of the SHA-256 digest of
// SHA256SUMS, ASN.1 DER encoded, as written by
//
//	openssl dgst -sha256 -sign key.pem -out SHA256SUMS.sig SHA256SUMS
//
// and checked by
//
//	openssl dgst -sha256 -verify pub.pem -signature SHA256SUMS.sig SHA256SUMS
//
// The same DER bytes base64 encoded (as cosign writes them) are accepted
// too; the signature file is at most 64 KiB. The signature is checked against ReleasePublicKey unless the caller
// supplies another key. Each staged binary must also report the release's
// version, which ties the signed bytes to the version the manifest claims.
//
// scripts/release.sh produces this layout and scripts/install.sh installs
// from it.
//
// # Installed layout
//
// The binaries live in one directory (by default the running executable's).
// An update keeps the replaced binaries as NAME.previous in that directory;
// Rollback puts them back. While an update runs its files are staged in a
// .banger-update-* directory there, which is always removed afterwards.
package updater
