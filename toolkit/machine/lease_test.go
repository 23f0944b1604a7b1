package machine

import (
	"strings"
	"testing"
)

func TestEtherLinkRE(t *testing.T) {
	out := "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n" +
		"2: lan: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:12:34:56 brd ff:ff:ff:ff:ff:ff\n" +
		"3: veth0@if2: <BROADCAST> mtu 1500 qdisc noop\\    link/ether 0a:58:0a:f4:00:01 brd ff:ff:ff:ff:ff:ff\n"
	var got []string
	for _, m := range etherLinkRE.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+"="+m[2])
	}
	if want := "lan=52:54:00:12:34:56 veth0=0a:58:0a:f4:00:01"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
