package patchcheck

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzCheck feeds arbitrary patches to the checker: it must not panic,
// must answer either nil or an *Error (or a read error, impossible from
// memory), and must give the same verdict twice.
func FuzzCheck(f *testing.F) {
	f.Add([]byte("diff --git a/x b/x\nindex 1111111..2222222 100644\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"))
	f.Add([]byte("diff --git a/l b/l\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+../../etc\n\\ No newline at end of file\n"))
	f.Add([]byte("diff --git \"a/\\056\\056/x\" \"b/x\"\nsimilarity index 90%\nrename from x\nrename to ../y\n"))
	f.Add([]byte("diff --git a/x b/x\nindex 1111111..2222222 100644\nGIT binary patch\nliteral 4\nLcmZ?wOiuy;1E2u_\n\nliteral 0\nHcmV?d00001\n\n"))
	f.Fuzz(func(t *testing.T, patch []byte) {
		_, err1 := Check(bytes.NewReader(patch))
		var pe *Error
		if err1 != nil && !errors.As(err1, &pe) {
			t.Fatalf("error of type %T: %v", err1, err1)
		}
		_, err2 := Check(bytes.NewReader(patch))
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("verdicts differ: %v / %v", err1, err2)
		}
		if err1 == nil && bytes.Contains(patch, []byte("\n+++ b/../")) && bytes.HasPrefix(patch, []byte("diff --git a/x b/x\n--- a/x\n+++ b/../")) {
			t.Fatal("accepted a +++ path outside the repository")
		}
	})
}
