package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
)

// ACME Renewal Information (RFC 9773) bounds.
const (
	ariRetryMin     = time.Minute    // Retry-After is clamped to
	ariRetryMax     = 24 * time.Hour // [ariRetryMin, ariRetryMax]
	ariRetryDefault = 6 * time.Hour  // without Retry-After
	ariFetchTimeout = 30 * time.Second
	// ariMinAge is the least age (or a tenth of its lifetime, if less) of
	// a certificate this process obtained before it is renewed, so that a
	// CA that keeps answering "now" cannot cause a loop of orders.
	ariMinAge = time.Hour
	// maxACMEBody bounds what is read of an ACME response.
	maxACMEBody = 1 << 20
)

// ariState is the CA's renewal window for one certificate and the time
// chosen in it.
type ariState struct {
	certID      string
	start, end  time.Time // the suggested window; zero if none known
	selected    time.Time // uniformly random in [start, end), kept while the window is unchanged
	explanation string    // the CA's explanationURL, if any
	nextFetch   time.Time // when to ask again (Retry-After, or backoff after an error)
	failures    int       // consecutive failed fetches
}

// ariCertID returns the RFC 9773 §4.1 identifier of leaf:
// base64url(AKI keyIdentifier) "." base64url(serial number DER content).
func ariCertID(leaf *x509.Certificate) (string, error) {
	if len(leaf.AuthorityKeyId) == 0 {
		return "", errors.New("certificate has no authority key identifier")
	}
	der, err := asn1.Marshal(leaf.SerialNumber)
	if err != nil {
		return "", fmt.Errorf("encoding serial number: %w", err)
	}
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(der, &raw); err != nil {
		return "", fmt.Errorf("encoding serial number: %w", err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(leaf.AuthorityKeyId) + "." + enc.EncodeToString(raw.Bytes), nil
}

// renewalInfoURL returns the CA's renewalInfo endpoint, "" if the CA has
// none; the directory is read once.
func (is *issuer) renewalInfoURL(ctx context.Context) (string, error) {
	if is.noARI {
		return "", nil
	}
	is.ariMu.Lock()
	defer is.ariMu.Unlock()
	if is.ariKnown {
		return is.ariURL, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, is.dirURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := is.httpc.Do(req)
	if err != nil {
		return "", fmt.Errorf("reading ACME directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("reading ACME directory: %s", resp.Status)
	}
	var dir struct {
		RenewalInfo string `json:"renewalInfo"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxACMEBody)).Decode(&dir); err != nil {
		return "", fmt.Errorf("reading ACME directory: %w", err)
	}
	is.ariURL, is.ariKnown = strings.TrimRight(dir.RenewalInfo, "/"), true
	return is.ariURL, nil
}

// fetchARI asks the CA for the renewal window of leaf and returns the new
// state, keeping the selected time of prev when the window is unchanged.
// now is the Manager's clock. A CA without ARI gives a nil state.
func (m *Manager) fetchARI(ctx context.Context, is *issuer, leaf *x509.Certificate, prev *ariState, now time.Time) (*ariState, error) {
	base, err := is.renewalInfoURL(ctx)
	if err != nil || base == "" {
		return nil, err
	}
	id, err := ariCertID(leaf)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/"+id, nil)
	if err != nil {
		return nil, err
	}
	resp, err := is.httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching renewal info: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxACMEBody))
	if err != nil {
		return nil, fmt.Errorf("fetching renewal info: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching renewal info: %s: %s", resp.Status, bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	start, end, explanation, err := parseRenewalInfo(body)
	if err != nil {
		return nil, err
	}
	st := &ariState{
		certID: id, start: start, end: end,
		explanation: explanation,
		nextFetch:   now.Add(ariRetryAfter(resp.Header.Get("Retry-After"), now)),
	}
	if prev != nil && prev.certID == id && prev.start.Equal(start) && prev.end.Equal(end) && !prev.selected.IsZero() {
		st.selected = prev.selected
	} else {
		st.selected = start.Add(mrand.N(end.Sub(start))) // #nosec G404 -- spreading renewals, not a secret
	}
	return st, nil
}

// parseRenewalInfo decodes a renewalInfo response (RFC 9773 §4.2); a
// window whose end is not after its start is an error.
func parseRenewalInfo(body []byte) (start, end time.Time, explanation string, err error) {
	var v struct {
		SuggestedWindow struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"suggestedWindow"`
		ExplanationURL string `json:"explanationURL"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return time.Time{}, time.Time{}, "", fmt.Errorf("decoding renewal info: %w", err)
	}
	w := v.SuggestedWindow
	if !w.Start.Before(w.End) {
		return time.Time{}, time.Time{}, "", fmt.Errorf("renewal info window [%s, %s] is empty", w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
	}
	return w.Start, w.End, v.ExplanationURL, nil
}

// ariRetryAfter parses a Retry-After value (seconds or an HTTP date) and
// clamps it to [ariRetryMin, ariRetryMax]; ariRetryDefault if absent or
// unparsable.
func ariRetryAfter(v string, now time.Time) time.Duration {
	d := ariRetryDefault
	if v = strings.TrimSpace(v); v != "" {
		if s, err := strconv.Atoi(v); err == nil {
			d = time.Duration(s) * time.Second
		} else if t, err := http.ParseTime(v); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, ariRetryMin), ariRetryMax)
}

// errAlreadyReplaced is the problem type of a replaces that the CA has
// already seen finalized.
const errAlreadyReplaced = "urn:ietf:params:acme:error:alreadyReplaced"

// newOrderReplacing places a new order for host that replaces the
// certificate certID (RFC 9773 §5). x/crypto/acme cannot send "replaces",
// so the request is signed here (ES256 with the account's P-256 key, kid
// from the registration).
// profile, if not empty, is the order's ACME profile.
func newOrderReplacing(ctx context.Context, client *acme.Client, httpc *http.Client, host, certID, profile string) (*acme.Order, error) {
	key, ok := client.Key.(*ecdsa.PrivateKey)
	if !ok || key.Curve.Params().BitSize != 256 || client.KID == "" {
		return nil, errors.New("replaces needs a registered P-256 account key")
	}
	dir, err := client.Discover(ctx)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(struct {
		Identifiers []acme.AuthzID `json:"identifiers"`
		Replaces    string         `json:"replaces"`
		Profile     string         `json:"profile,omitempty"`
	}{identifiers(host), certID, profile})
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		nonce, err := fetchNonce(ctx, httpc, dir.NonceURL)
		if err != nil {
			return nil, err
		}
		body, err := signES256(key, string(client.KID), nonce, dir.OrderURL, payload)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, dir.OrderURL, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/jose+json")
		req.Header.Set("User-Agent", "leproxy")
		resp, err := httpc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("creating order: %w", err)
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxACMEBody))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("creating order: %w", err)
		}
		if resp.StatusCode != http.StatusCreated {
			perr := problemFromBody(resp.StatusCode, data)
			if perr.ProblemType == "urn:ietf:params:acme:error:badNonce" && attempt < 2 {
				continue
			}
			return nil, perr
		}
		var o struct {
			Status         string   `json:"status"`
			Authorizations []string `json:"authorizations"`
			Finalize       string   `json:"finalize"`
		}
		if err := json.Unmarshal(data, &o); err != nil {
			return nil, fmt.Errorf("decoding order: %w", err)
		}
		return &acme.Order{URI: resp.Header.Get("Location"), Status: o.Status, AuthzURLs: o.Authorizations, FinalizeURL: o.Finalize}, nil
	}
}

// fetchNonce gets a fresh anti-replay nonce from the CA.
func fetchNonce(ctx context.Context, httpc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching nonce: %w", err)
	}
	resp.Body.Close()
	n := resp.Header.Get("Replay-Nonce")
	if n == "" {
		return "", fmt.Errorf("fetching nonce: %s without Replay-Nonce", resp.Status)
	}
	return n, nil
}

// signES256 returns the flattened JWS (RFC 7515) of payload for url, signed
// with key and identified by kid.
func signES256(key *ecdsa.PrivateKey, kid, nonce, url string, payload []byte) ([]byte, error) {
	protected, err := json.Marshal(struct {
		Alg   string `json:"alg"`
		KID   string `json:"kid"`
		Nonce string `json:"nonce"`
		URL   string `json:"url"`
	}{"ES256", kid, nonce, url})
	if err != nil {
		return nil, err
	}
	enc := base64.RawURLEncoding
	p64, b64 := enc.EncodeToString(protected), enc.EncodeToString(payload)
	digest := sha256.Sum256([]byte(p64 + "." + b64))
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return json.Marshal(struct {
		Protected string `json:"protected"`
		Payload   string `json:"payload"`
		Signature string `json:"signature"`
	}{p64, b64, enc.EncodeToString(sig)})
}

// problemFromBody turns an error response into an *acme.Error.
func problemFromBody(status int, body []byte) *acme.Error {
	var p struct {
		Type   string `json:"type"`
		Detail string `json:"detail"`
	}
	e := &acme.Error{StatusCode: status}
	if json.Unmarshal(body, &p) == nil && p.Type != "" {
		e.ProblemType, e.Detail = p.Type, p.Detail
	} else {
		e.Detail = string(bytes.TrimSpace(body[:min(len(body), 200)]))
	}
	return e
}
