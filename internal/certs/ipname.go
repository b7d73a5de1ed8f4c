package certs

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Certificates for IP addresses (RFC 8738). A mapping host that is an IP
// address is ordered as an "ip" identifier and its certificate has an IP
// SAN. Clients send no SNI for an IP address (RFC 6066 §3), so such a
// handshake gets the certificate of the address it reached (localIPName),
// and a tls-alpn-01 validation names the address by its reverse-DNS name
// in SNI (RFC 8738 §6), which ipFromReverseName turns back.

// ipFromReverseName returns the address of a reverse-DNS name
// ("4.3.2.1.in-addr.arpa" → "1.2.3.4", "….ip6.arpa" of 32 nibbles → the
// IPv6 address), and false for any other name.
func ipFromReverseName(name string) (string, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return "", false
		}
		var b [4]byte
		for i, l := range labels {
			n, err := strconv.ParseUint(l, 10, 8)
			if err != nil || l != strconv.FormatUint(n, 10) {
				return "", false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b).String(), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		nibbles := strings.Split(rest, ".")
		if len(nibbles) != 32 {
			return "", false
		}
		var b [16]byte
		for i, l := range nibbles {
			n, err := strconv.ParseUint(l, 16, 4)
			if err != nil || len(l) != 1 {
				return "", false
			}
			pos := 31 - i // nibble position from the most significant
			if pos%2 == 0 {
				b[pos/2] |= byte(n) << 4
			} else {
				b[pos/2] |= byte(n)
			}
		}
		return netip.AddrFrom16(b).Unmap().String(), true
	}
	return "", false
}

// localIPName returns the address the client of hello connected to, in
// the form the allow-list holds it, if it is on the allow-list; "" if
// not, or if hello has no connection.
func (m *Manager) localIPName(hello *tls.ClientHelloInfo) string {
	if hello == nil || hello.Conn == nil {
		return ""
	}
	addr, ok := hello.Conn.LocalAddr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	ip, ok := netip.AddrFromSlice(addr.IP)
	if !ok {
		return ""
	}
	name := ip.Unmap().WithZone("").String()
	if !m.Allowed(name) {
		return ""
	}
	return name
}
