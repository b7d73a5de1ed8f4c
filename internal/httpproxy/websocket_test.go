package httpproxy

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/coder/websocket"
	"github.com/leproxy/leproxy/internal/config"
)

func TestWebsocket(t *testing.T) {
	backend := startBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return // Accept has answered the client
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo "), msg...)); err != nil {
				return
			}
		}
	}))
	h := mustNew(t, []config.Host{tcpHost("ws.example.test", backend)}, Options{HSTS: true})
	// HTTP/2 is offered; the websocket client still speaks HTTP/1.1.
	_, client := serve(t, h, false, true)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "wss://ws.example.test/socket", &websocket.DialOptions{HTTPClient: client})
	if err != nil {
		t.Fatalf("dialing through the proxy: %v", err)
	}
	defer c.CloseNow()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("got status %d, want 101", resp.StatusCode)
	}
	for i := range 3 {
		msg := fmt.Sprintf("message %d", i)
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("writing %q: %v", msg, err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("reading echo of %q: %v", msg, err)
		}
		if want := "echo " + msg; typ != websocket.MessageText || string(got) != want {
			t.Errorf("got %v %q, want text %q", typ, got, want)
		}
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("closing: %v", err)
	}
}
