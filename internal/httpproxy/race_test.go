//go:build race

package httpproxy

// raceEnabled is set when the race detector is on, which makes each of
// TestTLSListenerFlood's connections some ten times dearer.
const raceEnabled = true
