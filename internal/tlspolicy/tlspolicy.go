// Package tlspolicy is leproxy's one TLS policy for the listeners it
// terminates TLS on: the HTTPS listener and every database listener.
//
// Apply sets TLS 1.2 as the minimum with only ECDHE key exchange and AEAD
// suites (AES-GCM and ChaCha20-Poly1305; TLS 1.3 as crypto/tls has it: no
// CBC, no SHA-1 MAC, no RSA key exchange), and turns session tickets off
// unless SetSessionTickets turned them on. When on, tickets are sealed with
// keys that live at most TicketLifetime: a new key every KeyRotation, the
// previous one still accepted, and no ticket older than TicketLifetime is
// resumed.
//
// Tickets are off by default because crypto/tls tells TLS 1.3 clients that
// its tickets last 7 days, a figure no setting changes: leproxy would
// refuse them after a day, but a scanner (testssl.sh) and a client take
// the advertised lifetime at its word. Without tickets a returning client
// does a full handshake: one more signature for the server, and for TLS 1.2
// one more round trip.
package tlspolicy

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// KeyRotation is how often a new session-ticket key is made.
	KeyRotation = 12 * time.Hour
	// TicketLifetime bounds the age of a ticket that resumes a session, and
	// the life of a ticket key: the current key and the previous one.
	TicketLifetime = 2 * KeyRotation
)

// CipherSuites are the TLS 1.2 suites allowed: ECDHE with an AEAD. TLS 1.3
// suites are not configurable in crypto/tls and all are AEAD.
var CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// tickets is the process's one ticket sealer, shared by every listener.
var tickets = newTicketKeys(time.Now)

// sessionTickets is SetSessionTickets's setting.
var sessionTickets atomic.Bool

// SetSessionTickets turns session resumption by tickets on or off in the
// configurations Apply sets from now on (the -tls-session-tickets flag). Set
// it once, at start, before any listener is made.
func SetSessionTickets(on bool) { sessionTickets.Store(on) }

// Apply sets the policy on cfg, a server configuration: MinVersion TLS 1.2,
// CipherSuites, and either session tickets off or, after
// SetSessionTickets(true), WrapSession and UnwrapSession with the process's
// rotating ticket keys. It leaves the certificates and ALPN alone.
func Apply(cfg *tls.Config) {
	tickets.apply(cfg, sessionTickets.Load())
}

func (k *ticketKeys) apply(cfg *tls.Config, withTickets bool) {
	cfg.MinVersion = tls.VersionTLS12
	cfg.CipherSuites = CipherSuites
	cfg.SessionTicketsDisabled = !withTickets
	cfg.WrapSession, cfg.UnwrapSession = nil, nil
	if withTickets {
		cfg.WrapSession = k.wrap
		cfg.UnwrapSession = k.unwrap
	}
}

// ticketKeys seals session tickets; a key is made, lazily, for each
// KeyRotation period of its clock, and dropped a period later. There is no
// goroutine: the clock is read on each ticket.
type ticketKeys struct {
	now func() time.Time

	mu   sync.Mutex
	cur  *ticketKey
	prev *ticketKey // the period before cur's, or nil
}

type ticketKey struct {
	period uint64
	aead   cipher.AEAD
}

func newTicketKeys(now func() time.Time) *ticketKeys {
	return &ticketKeys{now: now}
}

// Ticket layout: period (8 bytes, big endian) | nonce | sealed(issued unix
// seconds (8 bytes) | session state), the period as additional data.
const headerLen = 8

// keys returns the current and previous keys for now, rotating as needed.
func (k *ticketKeys) keys(now time.Time) (cur, prev *ticketKey, err error) {
	period := uint64(max(now.Unix(), 0)) / uint64(KeyRotation/time.Second)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cur == nil || period > k.cur.period {
		nk, err := newTicketKey(period)
		if err != nil {
			return nil, nil, err
		}
		if k.cur != nil && k.cur.period+1 == period {
			k.prev = k.cur
		} else {
			k.prev = nil
		}
		k.cur = nk
	}
	// A clock that went back keeps the newest key: it never revives one.
	return k.cur, k.prev, nil
}

func newTicketKey(period uint64) (*ticketKey, error) {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &ticketKey{period: period, aead: aead}, nil
}

// wrap is tls.Config.WrapSession.
func (k *ticketKeys) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	now := k.now()
	key, _, err := k.keys(now)
	if err != nil {
		return nil, err
	}
	ns := key.aead.NonceSize()
	plain := make([]byte, 8, 8+len(state))
	binary.BigEndian.PutUint64(plain, uint64(now.Unix()))
	plain = append(plain, state...)
	out := make([]byte, headerLen+ns, headerLen+ns+len(plain)+key.aead.Overhead())
	binary.BigEndian.PutUint64(out, key.period)
	if _, err := rand.Read(out[headerLen:]); err != nil {
		return nil, err
	}
	return key.aead.Seal(out, out[headerLen:], plain, out[:headerLen]), nil
}

// unwrap is tls.Config.UnwrapSession: (nil, nil), a full handshake, for a
// ticket it cannot open or that is older than TicketLifetime.
func (k *ticketKeys) unwrap(identity []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(identity) < headerLen {
		return nil, nil
	}
	now := k.now()
	cur, prev, err := k.keys(now)
	if err != nil {
		return nil, nil
	}
	period := binary.BigEndian.Uint64(identity)
	var key *ticketKey
	switch {
	case period == cur.period:
		key = cur
	case prev != nil && period == prev.period:
		key = prev
	default:
		return nil, nil
	}
	ns := key.aead.NonceSize()
	if len(identity) < headerLen+ns {
		return nil, nil
	}
	plain, err := key.aead.Open(nil, identity[headerLen:headerLen+ns], identity[headerLen+ns:], identity[:headerLen])
	if err != nil || len(plain) < 8 {
		return nil, nil
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(plain)), 0)
	if age := now.Sub(issued); age < 0 || age > TicketLifetime {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(plain[8:])
	if err != nil {
		return nil, nil
	}
	return ss, nil
}
