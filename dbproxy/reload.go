package dbproxy

import "fmt"

// router returns the Server's current routes.
func (s *Server) router() *router { return s.rt.Load() }

// CheckRoutes reports whether SetRoutes would accept routes and def,
// without changing anything.
func (s *Server) CheckRoutes(routes []Route, def string) error {
	if _, err := newRouter(routes, def, s.alpn); err != nil {
		return fmt.Errorf("dbproxy: %s listener %s: %w", s.proto.Name(), s.cfg.Listen, err)
	}
	return nil
}

// SetRoutes replaces the Server's routes and default route, for a reload.
// Connections accepted from now on use the new routes; sessions in flight
// keep the route they started with. A route whose host stays keeps its
// counters; a removed route's counters stay in Stats, still counting,
// until its last session ends. A RoutesWatcher Protocol is told. On error
// nothing changes.
func (s *Server) SetRoutes(routes []Route, def string) error {
	rt, err := newRouter(routes, def, s.alpn)
	if err != nil {
		return fmt.Errorf("dbproxy: %s listener %s: %w", s.proto.Name(), s.cfg.Listen, err)
	}
	s.mu.Lock()
	old := s.router()
	byHost := make(map[string]*route, len(old.byHost)+len(s.retired))
	for _, r := range s.retired {
		byHost[r.Host] = r
	}
	for host, r := range old.byHost {
		byHost[host] = r
	}
	for host, r := range rt.byHost {
		if o := byHost[host]; o != nil {
			r.stats = o.stats
			delete(byHost, host)
		}
	}
	s.retired = s.retired[:0]
	for _, r := range old.ordered {
		if byHost[r.Host] != nil && r.stats.refs.Load() > 0 {
			s.retired = append(s.retired, r)
			delete(byHost, r.Host)
		}
	}
	for _, r := range byHost { // retired before, still in use or unreported
		if r.stats.refs.Load() > 0 || !r.finalReported {
			s.retired = append(s.retired, r)
		}
	}
	s.rt.Store(rt)
	s.mu.Unlock()
	if w, ok := s.proto.(RoutesWatcher); ok {
		w.RoutesChanged(rt.routes())
	}
	return nil
}
