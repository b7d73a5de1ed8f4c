package httpproxy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/leproxy/leproxy/internal/config"
)

// maxAuthCache bounds the verified logins a basicAuth remembers.
const maxAuthCache = 1024

// basicAuth is the basic_auth middleware. A request without a user and
// password that match one of the bcrypt hashes gets 401 with
// WWW-Authenticate; one that passes goes on without its Authorization
// header unless PassAuthorization. Neither the password nor the header is
// ever logged (the access log records the path, not headers).
//
// A user name that is not configured is checked against a dummy hash of
// the users' highest cost, so that the answer takes as long as for a
// known user with a wrong password. Browsers send the password with every
// request, and bcrypt costs tens of milliseconds by design, so a login
// that passed is remembered (by an HMAC under a per-Handler random key,
// never the password) and the next request with it skips bcrypt; a reload
// builds a new Handler and forgets them all.
type basicAuth struct {
	users     map[string][]byte
	dummy     []byte
	challenge string // the WWW-Authenticate value
	pass      bool
	next      http.Handler

	key   [32]byte
	mu    sync.Mutex
	known map[[sha256.Size]byte]struct{}
}

func newBasicAuth(c *config.BasicAuth, next http.Handler) (*basicAuth, error) {
	cost := bcrypt.MinCost
	for _, h := range c.Users {
		if c, err := bcrypt.Cost(h); err == nil && c > cost {
			cost = c
		}
	}
	var pw [16]byte
	rand.Read(pw[:])
	dummy, err := bcrypt.GenerateFromPassword(pw[:], cost)
	if err != nil {
		return nil, fmt.Errorf("making the dummy hash: %w", err)
	}
	a := &basicAuth{
		users:     c.Users,
		dummy:     dummy,
		challenge: "Basic realm=" + strconv.Quote(c.Realm) + `, charset="UTF-8"`,
		pass:      c.PassAuthorization,
		next:      next,
		known:     make(map[[sha256.Size]byte]struct{}),
	}
	rand.Read(a.key[:])
	return a, nil
}

func (a *basicAuth) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, password, ok := r.BasicAuth()
	if !ok || !a.check(user, password) {
		w.Header().Set("WWW-Authenticate", a.challenge)
		http.Error(w, "401 unauthorized", http.StatusUnauthorized)
		return
	}
	if !a.pass {
		r.Header.Del("Authorization")
	}
	a.next.ServeHTTP(w, r)
}

// check reports whether password is user's.
func (a *basicAuth) check(user, password string) bool {
	hash, ok := a.users[user]
	if !ok {
		// As long as for a wrong password; the result does not matter.
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return false
	}
	mac := hmac.New(sha256.New, a.key[:])
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	mac.Write([]byte{0})
	mac.Write(hash)
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	a.mu.Lock()
	_, seen := a.known[sum]
	a.mu.Unlock()
	if seen {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	a.mu.Lock()
	if len(a.known) >= maxAuthCache {
		clear(a.known)
	}
	a.known[sum] = struct{}{}
	a.mu.Unlock()
	return true
}
