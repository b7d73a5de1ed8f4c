package certs

// Seams for the fleet tests of package certs_test, which need
// internal/etcdstore (a package that imports certs).

// SetChallengeHook makes f see every challenge whose answer is published,
// before the CA is told to validate it; the returned function removes it.
func SetChallengeHook(f func(host, typ string)) (restore func()) {
	challengeHook = f
	return func() { challengeHook = nil }
}

// RenewNow starts a renewal of host's ECDSA certificate, as the
// maintenance loop does when it is due, replacing the one in memory.
func (m *Manager) RenewNow(host string) {
	k := certKey{host: host}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entryLocked(k); e != nil && e.flight == nil {
		m.startLocked(k, e)
	}
}
