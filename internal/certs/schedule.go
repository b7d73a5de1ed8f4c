package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// stateSuffix ends the Storage key of a certificate's schedule: the key of
// "example.com" (ECDSA) is "example.com+leproxy-state", that of
// "example.com+rsa" is "example.com+rsa+leproxy-state". Not a certificate
// key (see certCacheKey), so autocert and older leproxy versions ignore it.
const stateSuffix = "+leproxy-state"

// stateVersion is the version of certState's JSON; a value of another
// version is ignored.
const stateVersion = 1

// maxStateSize bounds a stored schedule read back.
const maxStateSize = 64 << 10

// certState is a certificate's schedule as kept in Storage, so that a
// restart (or another node sharing the Storage) obeys it: no order right
// after a failure, no ARI window forgotten. Its JSON is a documented
// format (README, "Where the schedule is kept"):
//
//	{"version":1, "serial":"…", "issuer":"letsencrypt", "issuer_url":"https://…",
//	 "obtained_at":"…", "ari":{…}, "failures":2, "last_error":"…",
//	 "last_attempt":"…", "retry_at":"…", "start_issuer":"https://…",
//	 "fail_issuer":"https://…", "issuer_failures":2}
//
// serial is the hexadecimal serial number of the certificate served when
// it was written (empty if none): the issuer, obtained_at and ari belong
// to that certificate, and the failures to the attempts to replace it, so
// none of them is applied to another certificate (say one a peer
// renewed).
type certState struct {
	Version        int       `json:"version"`
	Serial         string    `json:"serial,omitempty"`
	Issuer         string    `json:"issuer,omitempty"`
	IssuerURL      string    `json:"issuer_url,omitempty"`
	ObtainedAt     time.Time `json:"obtained_at,omitzero"`
	ARI            *ariJSON  `json:"ari,omitempty"`
	Failures       int       `json:"failures,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	LastAttempt    time.Time `json:"last_attempt,omitzero"`
	RetryAt        time.Time `json:"retry_at,omitzero"`
	StartIssuer    string    `json:"start_issuer,omitempty"`
	FailIssuer     string    `json:"fail_issuer,omitempty"`
	IssuerFailures int       `json:"issuer_failures,omitempty"`
}

// ariJSON is ariState in certState.
type ariJSON struct {
	CertID         string    `json:"cert_id"`
	WindowStart    time.Time `json:"window_start,omitzero"`
	WindowEnd      time.Time `json:"window_end,omitzero"`
	Selected       time.Time `json:"selected,omitzero"`
	ExplanationURL string    `json:"explanation_url,omitempty"`
	NextFetch      time.Time `json:"next_fetch,omitzero"`
	Failures       int       `json:"failures,omitempty"`
}

// stateKey is the Storage key of k's schedule.
func (k certKey) stateKey() string { return k.storageKey() + stateSuffix }

// serialOf returns the hexadecimal serial number of leaf.
func serialOf(leaf *x509.Certificate) string {
	return leaf.SerialNumber.Text(16)
}

// issuerByURL returns the configured issuer of the directory dirURL, nil
// if none.
func (m *Manager) issuerByURL(dirURL string) *issuer {
	for _, is := range m.issuers {
		if is.dirURL == dirURL {
			return is
		}
	}
	return nil
}

// stateLocked returns e's schedule. m.mu is held.
func (m *Manager) stateLocked(e *entry) *certState {
	st := &certState{
		Version:        stateVersion,
		Failures:       e.failures,
		LastError:      e.lastErr,
		LastAttempt:    e.lastAttempt,
		RetryAt:        e.retryAt,
		IssuerFailures: e.issuerFailures,
	}
	if e.startIssuer != 0 {
		st.StartIssuer = m.issuers[e.startIssuer].dirURL
	}
	if e.issuerFailures > 0 {
		st.FailIssuer = m.issuers[e.failIssuer].dirURL
	}
	if e.cert == nil {
		return st
	}
	st.Serial = serialOf(e.cert.Leaf)
	st.ObtainedAt = e.obtainedAt
	if e.issuedBy != nil {
		st.Issuer, st.IssuerURL = e.issuedBy.name, e.issuedBy.dirURL
	}
	if a := e.ari; a != nil {
		st.ARI = &ariJSON{
			CertID: a.certID, WindowStart: a.start, WindowEnd: a.end, Selected: a.selected,
			ExplanationURL: a.explanation, NextFetch: a.nextFetch, Failures: a.failures,
		}
	}
	return st
}

// applyStateLocked restores what st says of e's certificate (which
// readState has matched). m.mu is held.
func (m *Manager) applyStateLocked(e *entry, st *certState) {
	serial := ""
	if e.cert != nil {
		serial = serialOf(e.cert.Leaf)
	}
	if st.Serial != serial {
		return // about another certificate: stale
	}
	e.failures, e.lastErr, e.lastAttempt, e.retryAt = st.Failures, st.LastError, st.LastAttempt, st.RetryAt
	if is := m.issuerByURL(st.StartIssuer); is != nil {
		e.startIssuer = is.index
	}
	if is := m.issuerByURL(st.FailIssuer); is != nil && st.IssuerFailures > 0 {
		e.failIssuer, e.issuerFailures = is.index, st.IssuerFailures
	}
	if e.cert == nil {
		return
	}
	e.obtainedAt = st.ObtainedAt
	e.issuedBy = m.issuerByURL(st.IssuerURL)
	e.issuerGone = e.issuedBy == nil && st.IssuerURL != ""
	if a := st.ARI; a != nil && e.issuedBy != nil {
		if id, err := ariCertID(e.cert.Leaf); err == nil && id == a.CertID {
			e.ari = &ariState{
				certID: a.CertID, start: a.WindowStart, end: a.WindowEnd, selected: a.Selected,
				explanation: a.ExplanationURL, nextFetch: a.NextFetch, failures: a.Failures,
			}
		}
	}
}

// readState reads k's schedule from Storage; nil, nil if there is none.
func (m *Manager) readState(ctx context.Context, k certKey) (*certState, error) {
	data, err := m.storage.Get(ctx, k.stateKey())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", k.stateKey(), maxStateSize)
	}
	var st certState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", k.stateKey(), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s has version %d, want %d", k.stateKey(), st.Version, stateVersion)
	}
	return &st, nil
}

// storedIssuer returns the issuer of leaf, a certificate in Storage, as
// its schedule records it; nil if unknown.
func (m *Manager) storedIssuer(ctx context.Context, k certKey, leaf *x509.Certificate) *issuer {
	st, err := m.readState(ctx, k)
	if err != nil || st == nil || st.Serial != serialOf(leaf) {
		return nil
	}
	return m.issuerByURL(st.IssuerURL)
}

// saveState writes k's schedule to Storage; a failure is logged (the
// schedule in memory still holds).
func (m *Manager) saveState(k certKey) {
	m.stateMu.Lock()
	defer m.stateMu.Unlock()
	m.mu.Lock()
	e := m.entries[k]
	var st *certState
	if e != nil {
		st = m.stateLocked(e)
	}
	m.mu.Unlock()
	if st == nil {
		return // the host left the mapping
	}
	data, err := json.Marshal(st)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), storageTimeout)
		err = m.storage.Put(ctx, k.stateKey(), data)
		cancel()
	}
	if err != nil {
		m.log.Error("certificate schedule not saved", "host", k.host, "key", k.keyType(), "error", err)
	}
}
