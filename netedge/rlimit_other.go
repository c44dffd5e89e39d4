//go:build !unix

package netedge

import "errors"

// RaiseFileLimit is unsupported here: there is no RLIMIT_NOFILE.
func RaiseFileLimit() (soft, hard uint64, err error) {
	return 0, 0, errors.ErrUnsupported
}
