package clientlimit

import (
	"net"
	"net/netip"
)

// DefaultIPv6Prefix is the prefix length IPv6 clients are grouped by.
const DefaultIPv6Prefix = 64

// A Key names one client: an IPv4 address as a /32, an IPv6 address as its
// prefix of the configured length.
type Key = netip.Prefix

// KeyOf returns the Key of addr, IPv4-mapped IPv6 addresses unmapped,
// IPv6 grouped by v6bits (0 means DefaultIPv6Prefix). The zero Key is
// returned for an invalid addr.
func KeyOf(addr netip.Addr, v6bits int) Key {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return Key{}
	}
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	if v6bits <= 0 || v6bits > 128 {
		v6bits = DefaultIPv6Prefix
	}
	p, _ := addr.Prefix(v6bits)
	return p
}

// AddrOf returns the IP address of a net.Addr from a listener or a
// connection (a *net.TCPAddr, or anything whose String is host:port); the
// zero Addr when it has none.
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case nil:
		return netip.Addr{}
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// String formats k for logs and the admin API: an IPv4 address without
// its /32, an IPv6 prefix with its length.
func String(k Key) string {
	if k.Addr().Is4() && k.Bits() == 32 {
		return k.Addr().String()
	}
	return k.String()
}

// ParseKey parses what String returns, or any IP address, into a Key
// with v6bits as KeyOf does.
func ParseKey(s string, v6bits int) (Key, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4() {
			return KeyOf(p.Addr(), v6bits), p.Bits() == 32
		}
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return Key{}, false
	}
	return KeyOf(a, v6bits), true
}

// contains reports whether any prefix of list contains addr.
func contains(list []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range list {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
