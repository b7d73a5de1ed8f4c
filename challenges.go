package main

import (
	"fmt"

	"github.com/leproxy/leproxy/internal/certs"
	"github.com/leproxy/leproxy/internal/config"
)

// challengeRules turns the mapping's certificates section into the
// certificate manager's challenge rules.
func challengeRules(cfg *config.Config) ([]certs.ChallengeRule, error) {
	var rules []certs.ChallengeRule
	for _, r := range cfg.Certificates {
		rule := certs.ChallengeRule{Names: r.Names, Type: r.Challenge}
		if d := r.DNS; d != nil {
			dns := &certs.DNS01{CheckServers: d.CheckServers, PropagationTimeout: d.PropagationTimeout}
			if u := d.RFC2136; u != nil {
				p, err := certs.NewRFC2136(certs.RFC2136Config{Server: u.Server, Zone: u.Zone, KeyName: u.TSIGKey, Algorithm: u.TSIGAlgorithm, Secret: u.TSIGSecret})
				if err != nil {
					return nil, fmt.Errorf("%s:%d: certificates: %w", cfg.File, r.Line, err)
				}
				dns.Provider = p
			} else {
				dns.Provider = &certs.DNSHook{Path: d.Hook, Timeout: d.HookTimeout}
			}
			rule.DNS01 = dns
		}
		rules = append(rules, rule)
	}
	return rules, nil
}
