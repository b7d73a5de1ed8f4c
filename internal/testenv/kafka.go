package testenv

// Kafka for integration tests: no Kafka broker runs here (Debian ships
// none), so tests start franz-go's kfake, an in-process fake cluster that
// speaks the Kafka protocol, on free 127.0.0.1 ports.

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
)

// StartKafka starts a kfake cluster of brokers brokers, one per free port
// on 127.0.0.1, with opts, and closes it when the test ends. Each broker
// advertises its own listen address, 127.0.0.1:port, in Metadata.
func StartKafka(t testing.TB, brokers int, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	ports := make([]int, brokers)
	for i := range ports {
		ports[i] = FreePort(t)
	}
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(brokers), kfake.Ports(ports...)}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: starting kfake cluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
