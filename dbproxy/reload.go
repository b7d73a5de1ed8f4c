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
// counters. On error nothing changes.
func (s *Server) SetRoutes(routes []Route, def string) error {
	rt, err := newRouter(routes, def, s.alpn)
	if err != nil {
		return fmt.Errorf("dbproxy: %s listener %s: %w", s.proto.Name(), s.cfg.Listen, err)
	}
	old := s.router()
	for host, r := range rt.byHost {
		if o := old.byHost[host]; o != nil {
			r.stats = o.stats
		}
	}
	s.rt.Store(rt)
	return nil
}
