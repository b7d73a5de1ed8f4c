package dbproxy

import "crypto/tls"

// Internals the external tests (package dbproxy_test) look at.

// GetCertificate is the Server's certificate callback.
func (s *Server) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.getCertificate(hello)
}

// SessionCount is the number of sessions the Server tracks.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// ListenerCount is the number of open listeners the session owns.
func (s *Session) ListenerCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.listeners)
}
