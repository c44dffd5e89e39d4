package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times (100 on
// every Linux architecture Go supports).
const clockTicks = 100

func newRunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit, so thousands
// of connections fit, and returns the limit now in force.
func raiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return lim.Cur, fmt.Errorf("setrlimit NOFILE to %d: %w", lim.Max, err)
		}
	}
	return lim.Cur, nil
}

// cpuTime is the user+system CPU time a process has used.
func cpuTime(pid string) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%s/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: bad utime/stime", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// rssKB is a process's resident set size (VmRSS), in KB.
func rssKB(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// pidListening finds the process that listens on addr's TCP port, from the
// socket inode in /proc/net/tcp{,6} and the fds in /proc/*/fd.
func pidListening(addr string) (int, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: %w", portStr, err)
	}
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			i := strings.LastIndexByte(f[1], ':')
			p, err := strconv.ParseUint(f[1][i+1:], 16, 16)
			if err == nil && p == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("nothing listens on port %d", port)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	self := os.Getpid()
	for _, fd := range procs {
		if target, err := os.Readlink(fd); err == nil && inodes[target] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			if pid != self {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process found holding the socket listening on port %d (another user's?)", port)
}

// cpuMeter measures the CPU a process uses over a span, in cores.
type cpuMeter struct {
	pid   string
	start time.Time
	cpu   time.Duration
	ok    bool
}

func startCPU(pid string) cpuMeter {
	c, err := cpuTime(pid)
	return cpuMeter{pid: pid, start: time.Now(), cpu: c, ok: err == nil}
}

// cores is CPU time used per wall-clock second since start; -1 if unknown.
func (m cpuMeter) cores() float64 {
	if !m.ok {
		return -1
	}
	c, err := cpuTime(m.pid)
	wall := time.Since(m.start)
	if err != nil || wall <= 0 {
		return -1
	}
	return float64(c-m.cpu) / float64(wall)
}

// loadAvg is the 1, 5 and 15 minute load averages, for context in warnings.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machineBusy is the CPU time all of the machine's CPUs have spent busy
// (/proc/stat: everything but idle and iowait).
func machineBusy() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n") // "cpu  user nice system idle iowait irq softirq steal ..."
	f := strings.Fields(first)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, true
}

// machineMeter measures the whole machine's CPU use over a span, so the
// share of other processes (whatever else runs on a shared machine) shows.
type machineMeter struct {
	start time.Time
	busy  time.Duration
	ok    bool
}

func startMachine() machineMeter {
	busy, ok := machineBusy()
	return machineMeter{start: time.Now(), busy: busy, ok: ok}
}

// meters measure the CPU of the bench, the servers, their Redis (when
// -redis names one on this machine) and the whole machine over a run.
type meters struct {
	self, redis cpuMeter
	servers     []cpuMeter
	machine     machineMeter
}

func (o *options) startMeters() meters {
	m := meters{self: startCPU("self"), machine: startMachine()}
	if pids, err := o.serverPIDs(); err == nil {
		for _, pid := range pids {
			m.servers = append(m.servers, startCPU(strconv.Itoa(pid)))
		}
	}
	if addr := redisHostPort(o.redisURL); addr != "" {
		if pid, err := pidListening(addr); err == nil {
			m.redis = startCPU(strconv.Itoa(pid))
		}
	}
	return m
}

func (m meters) report() cpuReport {
	c := cpuReport{Bench: m.self.cores(), Server: -1, Redis: m.redis.cores()}
	for _, s := range m.servers {
		cores := s.cores()
		if cores >= 0 {
			c.Server = max(0, c.Server) + cores
		}
		if len(m.servers) > 1 {
			c.Servers = append(c.Servers, cores)
		}
	}
	m.machine.report(&c)
	return c
}

// redisHostPort is the host:port of a -redis value, "" when there is none.
func redisHostPort(raw string) string {
	if raw == "" {
		return ""
	}
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

// report fills the machine's part of c, whose Bench, Server and Redis are
// set: the cores the rest of the machine used.
func (m machineMeter) report(c *cpuReport) {
	c.Cores = runtime.NumCPU()
	c.Others = -1
	busy, ok := machineBusy()
	wall := time.Since(m.start)
	if !m.ok || !ok || wall <= 0 {
		return
	}
	c.Others = max(0, float64(busy-m.busy)/float64(wall)-max(0, c.Bench)-max(0, c.Server)-max(0, c.Redis))
}
