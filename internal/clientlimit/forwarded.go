package clientlimit

import (
	"net/netip"
	"strings"
)

// maxForwardedHops bounds how many X-Forwarded-For entries are walked.
const maxForwardedHops = 32

// ForwardedFor returns the client a request came from: peer, unless peer
// is a trusted proxy, in which case the X-Forwarded-For values xff are
// walked from the right (the hop nearest to us) past trusted proxies to
// the first address that is not one. An entry that is not an IP address
// stops the walk at the hop that added it, which is then the client.
func ForwardedFor(peer netip.Addr, xff []string, trusted func(netip.Addr) bool) netip.Addr {
	client := peer.Unmap()
	if !trusted(client) {
		return client
	}
	hops := 0
	for i := len(xff) - 1; i >= 0; i-- {
		entries := xff[i]
		for entries != "" && hops < maxForwardedHops {
			var e string
			if j := strings.LastIndexByte(entries, ','); j >= 0 {
				entries, e = entries[:j], entries[j+1:]
			} else {
				entries, e = "", entries
			}
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			hops++
			a, ok := parseForwarded(e)
			if !ok {
				return client
			}
			client = a
			if !trusted(client) {
				return client
			}
		}
	}
	return client
}

// parseForwarded parses one X-Forwarded-For entry: an IP address,
// possibly bracketed or with a port, as some proxies write it.
func parseForwarded(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		if a, err := netip.ParseAddr(s[1 : len(s)-1]); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	return netip.Addr{}, false
}
