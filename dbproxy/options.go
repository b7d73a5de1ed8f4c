package dbproxy

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
)

// An Optioner is a Protocol that takes listener options of its own: keys
// of a tcp listener in the mapping beyond the ones every listener has
// (FTP's passive_ports and passive_address). The options travel as strings,
// key → value, from the mapping through Config.Options to SetOptions; the
// mapping accepts exactly the keys OptionKeys lists, for that protocol
// only, and checks each value with CheckOption when it loads, so that a bad
// value is reported with its file, line and key.
type Optioner interface {
	// OptionKeys lists the option keys the protocol accepts.
	OptionKeys() []string
	// CheckOption reports whether value is valid for key, one of
	// OptionKeys. The error says what is wrong with the value; the caller
	// names the key.
	CheckOption(key, value string) error
	// SetOptions applies opts, every key of which is one of OptionKeys; a
	// key left out takes its default. New calls it with Config.Options and
	// Server.SetOptions calls it on a reload, while sessions run: sessions
	// begun before may keep the options they started with. On error nothing
	// changes.
	SetOptions(opts map[string]string) error
}

// OptionKeys returns the listener option keys that the protocol registered
// under name accepts, sorted; nil for a protocol that takes none or is not
// registered.
func OptionKeys(name string) []string {
	p, ok := Lookup(name)
	if !ok {
		return nil
	}
	o, ok := p.(Optioner)
	if !ok {
		return nil
	}
	keys := slices.Clone(o.OptionKeys())
	sort.Strings(keys)
	return keys
}

// CheckOption reports whether value is valid for the listener option key
// of the protocol registered under name.
func CheckOption(name, key, value string) error {
	p, ok := Lookup(name)
	if !ok {
		return fmt.Errorf("unknown protocol %q", name)
	}
	return checkOption(p, key, value)
}

func checkOption(p Protocol, key, value string) error {
	o, ok := p.(Optioner)
	if !ok || !slices.Contains(o.OptionKeys(), key) {
		return fmt.Errorf("protocol %s takes no option %q", p.Name(), key)
	}
	return o.CheckOption(key, value)
}

// checkOptions checks every option of opts for protocol p.
func checkOptions(p Protocol, opts map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		if err := checkOption(p, k, opts[k]); err != nil {
			errs = append(errs, fmt.Errorf("option %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// setOptions checks and applies opts to p; a Protocol that is no Optioner
// takes none.
func setOptions(p Protocol, opts map[string]string) error {
	if err := checkOptions(p, opts); err != nil {
		return err
	}
	o, ok := p.(Optioner)
	if !ok {
		return nil
	}
	return o.SetOptions(maps.Clone(opts))
}

// CheckOptions reports whether SetOptions would accept opts, without
// changing anything.
func (s *Server) CheckOptions(opts map[string]string) error {
	if err := checkOptions(s.proto, opts); err != nil {
		return fmt.Errorf("dbproxy: %s listener %s: %w", s.proto.Name(), s.cfg.Listen, err)
	}
	return nil
}

// SetOptions replaces the Protocol's listener options (Config.Options), for
// a reload. Sessions that begin from now on use them. On error nothing
// changes.
func (s *Server) SetOptions(opts map[string]string) error {
	if err := setOptions(s.proto, opts); err != nil {
		return fmt.Errorf("dbproxy: %s listener %s: %w", s.proto.Name(), s.cfg.Listen, err)
	}
	return nil
}
