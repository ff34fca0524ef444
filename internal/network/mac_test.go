package network

import (
	"net"
	"testing"
)

func TestMACFor(t *testing.T) {
	if got := MACFor("vm-1"); got != "02:d6:5f:f9:ea:78" {
		t.Errorf("MACFor(vm-1) = %s: the mapping changed, which renames every existing guest's MAC", got)
	}
	seen := map[string]string{}
	for _, id := range []string{"", "vm-1", "vm-2", "otter-falcon", "01J9Z3W0Q5N8M2", "a very long id with spaces and ünïcode"} {
		mac := MACFor(id)
		if again := MACFor(id); again != mac {
			t.Fatalf("MACFor(%q) not stable: %s then %s", id, mac, again)
		}
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			t.Fatalf("MACFor(%q) = %q: not a 6-byte MAC (%v)", id, mac, err)
		}
		if hw[0]&0x01 != 0 {
			t.Errorf("MACFor(%q) = %s is multicast", id, mac)
		}
		if hw[0]&0x02 == 0 {
			t.Errorf("MACFor(%q) = %s is not locally administered", id, mac)
		}
		if mac != net.HardwareAddr(hw).String() {
			t.Errorf("MACFor(%q) = %s is not in canonical lowercase form", id, mac)
		}
		if other, dup := seen[mac]; dup {
			t.Errorf("MACFor(%q) = MACFor(%q) = %s", id, other, mac)
		}
		seen[mac] = id
	}
}
