package certs

// UsesLocalCA reports whether name gets its certificate from the local CA
// rather than from ACME.
func (m *Manager) UsesLocalCA(name string) bool {
	return m.local || isLocalhostName(name)
}

// EnsureLocalCA creates the local CA's root in the cache directory if it
// does not exist yet, so that its path can be given to users before the
// first handshake, and returns that path.
func (m *Manager) EnsureLocalCA() (string, error) {
	if _, _, err := m.ca.ensureRoot(); err != nil {
		return "", err
	}
	return m.ca.rootPath, nil
}
