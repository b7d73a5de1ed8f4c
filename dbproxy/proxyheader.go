package dbproxy

import (
	"fmt"
	"io"
	"net"

	"github.com/pires/go-proxyproto"
)

// writeProxyHeader writes the PROXY protocol header of version v to w for
// a client at src that connected to the listener at dst; nothing for
// ProxyNone. Addresses that are not TCP (a test's pipe) are sent as
// UNKNOWN (v1) or LOCAL (v2), as the specification says for them.
func writeProxyHeader(w io.Writer, v ProxyVersion, src, dst net.Addr) error {
	var version byte
	switch v {
	case ProxyV1:
		version = 1
	case ProxyV2:
		version = 2
	default:
		return nil
	}
	h := proxyproto.HeaderProxyFromAddrs(version, src, dst)
	if _, err := h.WriteTo(w); err != nil {
		return fmt.Errorf("writing PROXY v%d header: %w", version, err)
	}
	return nil
}
