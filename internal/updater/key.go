package updater

// ReleasePublicKey is the PEM encoded ECDSA P-256 public key that release
// signatures are checked against. scripts/install.sh embeds a copy (a
// test checks it is identical) and scripts/release.sh reads this file to
// refuse signing with a key whose public half differs.
//
// The private half was generated for development and is not part of the
// repository; replace this key (and the copy in scripts/install.sh) with
// the release key before the first publication.
const ReleasePublicKey = `-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEORpP+4LjVpvmKCrC2wRkFF8kre4z
5tmbmiRKhS4VHL9zQTNScMUOYFjxP7a2GgjhiUih2nYaMre1agRQQkIVgA==
-----END PUBLIC KEY-----
`
