package ftp

// The control loop: client commands relayed to the backend, replies back,
// some commands answered by leproxy, passive mode and transfers.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/leproxy/leproxy/dbproxy"
)

// A clientLine is a line the client sent, or the error that ended its
// reading.
type clientLine struct {
	line string
	err  error
}

// control is the state of one session's control loop.
type control struct {
	*session
	ctx    context.Context
	client net.Conn
	lines  chan clientLine
	queue  []clientLine // read during a transfer, served after it
	pbsz   bool
	protP  bool
	// midLine is set by the reader while a command is arriving: from its
	// first byte until the main loop has it. A drain waits for it.
	midLine atomic.Bool
	data    *passive // the open passive listener or data connection, or nil
}

// transferVerbs are the commands that use a data connection.
var transferVerbs = map[string]bool{
	"RETR": true, "STOR": true, "STOU": true, "APPE": true,
	"LIST": true, "NLST": true, "MLSD": true,
}

// serve is the control loop, run by Session.Serve on the client's control
// connection.
func (ss *session) serve(ctx context.Context, conn net.Conn) error {
	c := &control{session: ss, ctx: ctx, client: conn, lines: make(chan clientLine)}
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go c.readClient(newReader(conn), stop, readerDone)
	defer func() {
		c.closeData()
		close(stop)
		conn.Close()
		<-readerDone
	}()
	drain := ctx.Done()
	for {
		var cl clientLine
		if len(c.queue) > 0 {
			cl, c.queue = c.queue[0], c.queue[1:]
		} else {
			select {
			case <-drain:
				if c.commandArriving() {
					// Serve it first; look again in a moment.
					drain = after(20 * time.Millisecond)
					continue
				}
				writeLine(conn, "421 Service closing control connection: leproxy is shutting down")
				writeLine(ss.backend, "QUIT")
				return nil
			case cl = <-c.lines:
			}
		}
		if cl.err != nil {
			if errors.Is(cl.err, errLineTooLong) {
				writeLine(conn, "500 Command line too long")
				return fmt.Errorf("reading command: %w", cl.err)
			}
			return nil // the client went away
		}
		done, err := c.handle(cl.line)
		if done || err != nil {
			return err
		}
	}
}

// after is time.After as a channel of struct{}, like a ctx.Done.
func after(d time.Duration) <-chan struct{} {
	ch := make(chan struct{})
	time.AfterFunc(d, func() { close(ch) })
	return ch
}

// commandArriving reports whether the client has begun sending a
// command that the loop does not have yet.
func (c *control) commandArriving() bool {
	if c.midLine.Load() {
		return true
	}
	pending, _ := dbproxy.PendingInput(c.raw)
	return pending
}

// readClient reads the client's lines into c.lines until an error or stop.
func (c *control) readClient(r *bufio.Reader, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for {
		_, err := r.Peek(1)
		c.midLine.Store(err == nil)
		line, err := readLine(r)
		select {
		case c.lines <- clientLine{line, err}:
			c.midLine.Store(false)
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// reply writes one reply line of leproxy's own to the client.
func (c *control) reply(line string) error { return writeLine(c.client, line) }

// handle serves one client command; done is set when the session is over.
func (c *control) handle(line string) (done bool, err error) {
	cmd, perr := parseCommand(line)
	if perr != nil {
		return false, c.reply("500 " + perr.Error())
	}
	switch cmd.verb {
	case "AUTH":
		if c.tls {
			return false, c.reply("503 TLS is already on")
		}
		return false, c.reply("534 AUTH TLS after login is not supported: reconnect and use AUTH TLS first")
	case "PBSZ":
		if !c.tls {
			return false, c.reply("503 PBSZ needs AUTH TLS")
		}
		c.pbsz = true
		return false, c.reply("200 PBSZ=0")
	case "PROT":
		return false, c.prot(cmd.arg)
	case "CCC":
		return false, c.reply("534 CCC refused: the control connection stays encrypted")
	case "REIN":
		return false, c.reply("502 REIN not implemented")
	case "PORT", "EPRT", "LPRT":
		return false, c.reply("502 Active mode is not supported by this proxy: use passive mode (PASV or EPSV)")
	case "LPSV", "SPSV":
		return false, c.reply("502 Command not implemented: use PASV or EPSV")
	case "PASV", "EPSV":
		if cmd.verb == "EPSV" && (cmd.arg == "ALL" || cmd.arg == "all") {
			break // relayed: the backend agrees to EPSV only
		}
		if cmd.verb == "EPSV" && cmd.arg != "" && cmd.arg != c.epsvFamily() {
			// RFC 2428 §3: the family must be the control connection's.
			return false, c.reply("522 Network protocol not supported, use (" + c.epsvFamily() + ")")
		}
		return false, c.passive(cmd)
	case "QUIT":
		if err := writeLine(c.backend, "QUIT"); err != nil {
			return true, nil
		}
		c.relayReply()
		return true, nil
	}
	if transferVerbs[cmd.verb] {
		return false, c.transfer(cmd)
	}
	if err := writeLine(c.backend, cmd.String()); err != nil {
		return true, fmt.Errorf("backend %s: %w", c.route.Backend, err)
	}
	_, err = c.relayReply()
	return false, err
}

// epsvFamily is the RFC 2428 address family of the client's connection:
// "1" for IPv4, "2" for IPv6.
func (c *control) epsvFamily() string {
	local, _ := netip.ParseAddrPort(c.s.ListenerAddr().String())
	if local.Addr().Unmap().Is4() {
		return "1"
	}
	return "2"
}

// prot answers PROT: only P on a TLS session.
func (c *control) prot(arg string) error {
	switch {
	case !c.tls:
		return c.reply("503 PROT needs AUTH TLS")
	case !c.pbsz:
		return c.reply("503 PBSZ first")
	}
	switch arg {
	case "P", "p":
		c.protP = true
		return c.reply("200 Protection level set to Private")
	case "C", "c":
		return c.reply("534 Data connections must be protected: use PROT P")
	case "S", "s", "E", "e":
		return c.reply("536 Protection level not supported: use PROT P")
	default:
		return c.reply("504 Unknown protection level")
	}
}

// relayReply relays one backend reply, line by line, as it comes.
func (c *control) relayReply() (reply, error) {
	rep, err := readReply(c.br, func(line string) error { return writeLine(c.client, line) }, false)
	if err != nil {
		return rep, fmt.Errorf("backend %s reply: %w", c.route.Backend, err)
	}
	return rep, nil
}

// relayCollected sends a reply that was read with collect to the client.
func (c *control) relayCollected(rep reply) error {
	return writeLines(c.client, rep.lines...)
}

// passive answers PASV or EPSV: the backend is asked for a data port,
// leproxy listens on one of its own and tells the client.
func (c *control) passive(cmd command) error {
	c.closeData()
	if c.tls && !c.protP {
		return c.reply("521 Data connections must be protected: send PBSZ 0 and PROT P first")
	}
	local, _ := netip.ParseAddrPort(c.s.ListenerAddr().String())
	ip := local.Addr().Unmap()
	adv := ip
	if c.opts.public.IsValid() {
		adv = c.opts.public
	}
	if cmd.verb == "PASV" && !adv.Is4() {
		return c.reply("425 PASV cannot carry an IPv6 address: use EPSV")
	}
	baddr, rep, err := c.backendPassive()
	if err != nil {
		c.reply("425 Can't open data connection: the backend did not enter passive mode")
		return err
	}
	if !baddr.IsValid() {
		return c.relayCollected(rep)
	}
	d, err := c.listen(ip, baddr)
	if err != nil {
		c.s.Logger.Warn("ftp passive listener", "error", err)
		return c.reply("425 Can't open data connection: no free data port")
	}
	c.data = d
	if cmd.verb == "PASV" {
		return c.reply(format227(adv, d.port))
	}
	return c.reply(format229(d.port))
}

// backendPassive puts the backend in passive mode, EPSV first and PASV
// when it does not know EPSV, and returns its data address: its control
// connection's address with the port it replied. The address is invalid,
// and rep the backend's reply, when it refused both.
func (c *control) backendPassive() (netip.AddrPort, reply, error) {
	bip, _ := netip.ParseAddrPort(c.backend.RemoteAddr().String())
	var rep reply
	for _, verb := range []string{"EPSV", "PASV"} {
		var err error
		if rep, err = c.backendCommand(verb); err != nil {
			return netip.AddrPort{}, rep, fmt.Errorf("backend %s: %s: %w", c.route.Backend, verb, err)
		}
		var port int
		switch rep.code {
		case 229:
			port, err = parse229(rep.text())
		case 227:
			var ap netip.AddrPort
			ap, err = parse227(rep.text())
			port = int(ap.Port())
		default:
			continue
		}
		if err != nil {
			return netip.AddrPort{}, rep, fmt.Errorf("backend %s: %w", c.route.Backend, err)
		}
		return netip.AddrPortFrom(bip.Addr().Unmap(), uint16(port)), rep, nil
	}
	return netip.AddrPort{}, rep, nil
}

// transfer relays a command that uses the data connection and holds the
// backend's final reply until the data connection's relay has ended.
func (c *control) transfer(cmd command) error {
	d := c.data
	c.data = nil
	if d != nil {
		defer d.close()
	}
	if err := writeLine(c.backend, cmd.String()); err != nil {
		return fmt.Errorf("backend %s: %w", c.route.Backend, err)
	}
	rep, err := c.relayPreliminary()
	if err != nil || rep.code >= 200 {
		return err
	}
	if d == nil {
		// The backend opened a data connection leproxy knows nothing of:
		// no client can reach it.
		c.readReplyDiscard()
		return c.reply("425 Can't open data connection: use PASV or EPSV first")
	}
	var dataErr error
	timer := time.NewTimer(c.s.HandshakeTimeout())
	defer timer.Stop()
	ready, late := d.ready, timer.C
	for waiting := true; waiting; {
		select {
		case <-ready:
			ready, late = nil, nil
		case <-late:
			late = nil
			d.fail(errors.New("no data connection came in time"))
		case <-d.done:
			waiting = false
		case cl := <-c.lines:
			if !c.abort(cl, d) {
				return nil
			}
		}
	}
	dataErr = d.err
	if dataErr != nil {
		c.s.Logger.Warn("ftp data connection failed", "command", cmd.verb, "error", dataErr)
		c.readReplyDiscard()
		if errors.Is(dataErr, errNotResumed) {
			return c.reply("522 Data connection refused: it must resume the TLS session of the control connection")
		}
		return c.reply("425 Can't open data connection")
	}
	_, err = c.relayReply()
	return err
}

// abort takes a line the client sent during a transfer: ABOR aborts it
// (and reports false: the transfer is over), anything else waits its turn.
func (c *control) abort(cl clientLine, d *passive) bool {
	cmd, err := parseCommand(cl.line)
	if cl.err != nil || err != nil || cmd.verb != "ABOR" {
		c.queue = append(c.queue, cl)
		if cl.err != nil {
			d.fail(errors.New("client control connection closed"))
		}
		return true
	}
	d.fail(errors.New("aborted by the client"))
	<-d.done
	if err := writeLine(c.backend, "ABOR"); err != nil {
		return false
	}
	// The transfer's own reply, which leproxy held (426, or 226 when it
	// was through), then ABOR's (225 or 226).
	if _, err := c.relayReply(); err == nil {
		c.relayReply()
	}
	return false
}

// relayPreliminary relays the backend's first reply to a transfer
// command: a 1xx (the transfer begins) or its final word.
func (c *control) relayPreliminary() (reply, error) {
	return c.relayReply()
}

// readReplyDiscard reads the backend's final reply to a transfer whose
// data connection failed, and drops it: the client is told 425 instead.
func (c *control) readReplyDiscard() {
	if _, err := readReply(c.br, nil, false); err != nil {
		c.s.Logger.Debug("ftp backend reply after a failed data connection", "error", err)
	}
}

// closeData closes the session's passive listener or data connection.
func (c *control) closeData() {
	if c.data != nil {
		c.data.close()
		c.data = nil
	}
}
