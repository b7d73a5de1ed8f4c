//go:build !linux

package backup

// exchangeDirs reports that atomic exchange is not available here.
func exchangeDirs(a, b string) error { return errExchangeUnsupported }
