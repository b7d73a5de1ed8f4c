package sdnotify

import (
	"syscall"
	"testing"
	"unsafe"
)

// TestMonotonicClock checks monotonicUsec against CLOCK_MONOTONIC read by
// the raw system call (time.Now carries no absolute monotonic value): a
// wrong clock, or a unit error, falls outside the two readings.
func TestMonotonicClock(t *testing.T) {
	var ts syscall.Timespec
	read := func() uint64 {
		t.Helper()
		if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
			t.Fatal(e)
		}
		return uint64(ts.Sec)*1_000_000 + uint64(ts.Nsec)/1_000
	}
	before := read()
	got, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	after := read()
	if got < before || got > after {
		t.Errorf("monotonicUsec %d outside [%d, %d]", got, before, after)
	}
}
