//go:build unix

package netedge

import "syscall"

// RaiseFileLimit raises the soft limit on open descriptors (RLIMIT_NOFILE)
// to the hard one and returns both. Go's runtime does the same at start
// since 1.19; doing it here makes the figure the budget is planned from
// explicit, and independent of how the process was started.
func RaiseFileLimit() (soft, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, err
	}
	if l.Cur < l.Max {
		raised := syscall.Rlimit{Cur: l.Max, Max: l.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			return l.Cur, l.Max, err
		}
		l = raised
	}
	return l.Cur, l.Max, nil
}
