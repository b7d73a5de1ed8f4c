//go:build !unix

package backup

import "io/fs"

func ownerFor(fs.FileInfo) *fileOwner { return nil }

func mountPoint(string) (bool, error) { return false, nil }

func isCrossDevice(error) bool { return false }

func isReadOnly(error) bool { return false }
