package httpproxy

import (
	"log/slog"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// quicBufferSize is the UDP socket buffer quic-go asks the kernel for
// (both directions): less loses packets, and throughput, under load.
const quicBufferSize = 7 << 20

// warnSmallUDPBuffers logs, once per server, when the kernel gave conn
// smaller buffers than quic-go asked for (it tries SO_RCVBUF, then, with
// CAP_NET_ADMIN, SO_RCVBUFFORCE). HTTP/3 still works; the fix is the
// net.core.rmem_max and net.core.wmem_max sysctls.
func warnSmallUDPBuffers(conn net.PacketConn, logger *slog.Logger) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	var rerr, serr error
	if err := raw.Control(func(fd uintptr) {
		rcv, rerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	}); err != nil || rerr != nil || serr != nil {
		return
	}
	if rcv >= quicBufferSize && snd >= quicBufferSize {
		return
	}
	logger.Warn("UDP buffers smaller than QUIC wants: HTTP/3 may lose packets under load; raise net.core.rmem_max and net.core.wmem_max (see README)",
		"receive_bytes", rcv, "send_bytes", snd, "want_bytes", quicBufferSize)
}
