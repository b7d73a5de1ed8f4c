package memcached

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/leproxy/leproxy/dbproxy"
	"github.com/leproxy/leproxy/dbproxy/dbtest"
	"github.com/leproxy/leproxy/internal/testenv"
)

// memcached through leproxy with a real memcached, gomemcache and raw
// binary protocol requests.

// memcacheClient is a gomemcache client for the proxy over verified TLS
// with server name sni ("" for none, then verifying verifyName).
func memcacheClient(p *dbtest.Proxy, sni, verifyName string) *memcache.Client {
	c := memcache.New(p.Addr)
	c.Timeout = 10 * time.Second
	c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := p.CA.ClientTLS(conn, sni, verifyName)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
	return c
}

// binaryRequestBytes is a binary request: opcode, extras, key, value.
func binaryRequestBytes(opcode byte, opaque uint32, extras []byte, key, value string) []byte {
	var h [headerLen]byte
	h[0], h[1] = binaryRequest, opcode
	binary.BigEndian.PutUint16(h[2:], uint16(len(key)))
	h[4] = byte(len(extras))
	binary.BigEndian.PutUint32(h[8:], uint32(len(extras)+len(key)+len(value)))
	binary.BigEndian.PutUint32(h[12:], opaque)
	b := append(h[:], extras...)
	b = append(b, key...)
	return append(b, value...)
}

func TestMemcachedIntegration(t *testing.T) {
	srv := testenv.StartMemcached(t)
	ca := dbtest.NewCA(t)
	p := dbtest.StartProtocol(t, ca, "memcached", "a.test", dbproxy.Route{Host: "a.test", Backend: srv.Addr})

	t.Run("gomemcache text protocol", func(t *testing.T) {
		c := memcacheClient(p, "a.test", "a.test")
		defer c.Close()
		if err := c.Set(&memcache.Item{Key: "k", Value: []byte("hello"), Flags: 7}); err != nil {
			t.Fatalf("set: %v", err)
		}
		it, err := c.Get("k")
		if err != nil || string(it.Value) != "hello" || it.Flags != 7 {
			t.Fatalf("get: got %+v, %v", it, err)
		}
		if err := c.Set(&memcache.Item{Key: "n", Value: []byte("41")}); err != nil {
			t.Fatalf("set: %v", err)
		}
		if n, err := c.Increment("n", 1); err != nil || n != 42 {
			t.Errorf("incr: got %d, %v, want 42", n, err)
		}
		if err := c.Delete("k"); err != nil {
			t.Errorf("delete: %v", err)
		}
		if _, err := c.Get("k"); err != memcache.ErrCacheMiss {
			t.Errorf("get after delete: %v, want a cache miss", err)
		}
	})
	t.Run("no server name gets the default", func(t *testing.T) {
		c := memcacheClient(p, "", "a.test")
		defer c.Close()
		if err := c.Set(&memcache.Item{Key: "d", Value: []byte("default")}); err != nil {
			t.Fatalf("set: %v", err)
		}
		if it, err := c.Get("d"); err != nil || string(it.Value) != "default" {
			t.Errorf("get: got %+v, %v", it, err)
		}
	})
	t.Run("binary protocol", func(t *testing.T) {
		tc := p.DialTLS(t, "a.test", "a.test")
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		// SET (0x01): extras are flags and expiration.
		extras := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0xcafe), 0)
		dbtest.MustWrite(t, tc, binaryRequestBytes(0x01, 11, extras, "bk", "binary value"))
		if r := readBinaryResponse(t, tc); r.magic != 0x81 || r.opcode != 0x01 || r.status != 0 || r.opaque != 11 {
			t.Fatalf("SET response %+v, want magic 0x81, opcode 1, status 0, opaque 11", r)
		}
		// GET (0x00): the value after 4 bytes of flags.
		dbtest.MustWrite(t, tc, binaryRequestBytes(0x00, 12, nil, "bk", ""))
		r := readBinaryResponse(t, tc)
		if r.status != 0 || r.opaque != 12 || len(r.body) < 4 {
			t.Fatalf("GET response %+v", r)
		}
		if flags, value := binary.BigEndian.Uint32([]byte(r.body[:4])), r.body[4:]; flags != 0xcafe || value != "binary value" {
			t.Errorf("GET: flags %#x value %q, want 0xcafe %q", flags, value, "binary value")
		}
		// The key set in binary is there for the text protocol too.
		c := memcacheClient(p, "a.test", "a.test")
		defer c.Close()
		if it, err := c.Get("bk"); err != nil || string(it.Value) != "binary value" {
			t.Errorf("text get of the binary key: %+v, %v", it, err)
		}
	})
	t.Run("plaintext gomemcache", func(t *testing.T) {
		c := memcache.New(p.Addr)
		c.Timeout = 10 * time.Second
		defer c.Close()
		_, err := c.Get("k")
		if err == nil || !strings.Contains(err.Error(), "SERVER_ERROR TLS is required on this port") {
			t.Errorf("got %v, want the TLS required error", err)
		}
	})
	t.Run("unknown server name", func(t *testing.T) {
		c := memcacheClient(p, "c.test", "a.test")
		defer c.Close()
		_, err := c.Get("k")
		if err == nil || !strings.Contains(err.Error(), "SERVER_ERROR no route for server name c.test") {
			t.Errorf("got %v, want the no route error", err)
		}
	})
	t.Run("backend down", func(t *testing.T) {
		down := testenv.StartMemcached(t)
		q := dbtest.StartProtocol(t, ca, "memcached", "", dbproxy.Route{Host: "a.test", Backend: down.Addr})
		down.Stop()
		c := memcacheClient(q, "a.test", "a.test")
		defer c.Close()
		err := c.Set(&memcache.Item{Key: "k", Value: []byte("v")})
		if err == nil || !strings.Contains(err.Error(), "SERVER_ERROR could not connect to the backend of a.test") {
			t.Errorf("got %v, want the backend error", err)
		}
	})
}
