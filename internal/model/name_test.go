package model

import (
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "vm1", "my-vm", "0", "123", "a-b-c", strings.Repeat("a", 63)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("%q rejected: %v", n, err)
		}
	}
	bad := []string{"", "-a", "a-", "-", "A", "MyVM", "a b", "a\nb", "a\tb", "a.b", "a/b", "a:b", "a=b", "a'b",
		"a\"b", "a\x00b", "a\x7fb", "é", "ünï", "box/../evil", "a_b", strings.Repeat("a", 64)}
	for _, n := range bad {
		if err := ValidateName(n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
}

func TestValidateNameMessages(t *testing.T) {
	err := ValidateName("Bad")
	if err == nil || !strings.Contains(err.Error(), "lowercase") {
		t.Errorf("message should say what is allowed: %v", err)
	}
	err = ValidateName(strings.Repeat("x", 70))
	if err == nil || !strings.Contains(err.Error(), "63") {
		t.Errorf("message should give the limit: %v", err)
	}
}
