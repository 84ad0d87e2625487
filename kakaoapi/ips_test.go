package kakaoapi

import "testing"

// The documented whResponse shape variants all yield the callback addresses.
func TestParseInboundIPsShapes(t *testing.T) {
	for _, c := range []struct {
		name, body string
		want       []string
	}{
		{"type and ips", `{"inbound":[{"type":"callback","ips":["1.2.3.4","5.6.7.0/24"]},{"type":"scrap","ips":["9.9.9.9"]}]}`, []string{"1.2.3.4/32", "5.6.7.0/24"}},
		{"keyed by type", `{"inbound":{"callback":["1.2.3.4"],"scrap":["9.9.9.9"]}}`, []string{"1.2.3.4/32"}},
		{"entry keyed by type", `{"inbound":[{"callback":[{"ip":"1.2.3.4"}]},{"scrap":["9.9.9.9"]}]}`, []string{"1.2.3.4/32"}},
		{"comma string, other member names", `{"inbound":[{"name":"Callback","addresses":"1.2.3.4, 2001:db8::/32","note":"webhooks"}]}`, []string{"1.2.3.4/32", "2001:db8::/32"}},
	} {
		got, err := ParseInboundIPs([]byte(c.body))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var s []string
		for _, p := range got {
			s = append(s, p.String())
		}
		if len(s) != len(c.want) {
			t.Fatalf("%s: got %v, want %v", c.name, s, c.want)
		}
		for i := range s {
			if s[i] != c.want[i] {
				t.Fatalf("%s: got %v, want %v", c.name, s, c.want)
			}
		}
	}
}
