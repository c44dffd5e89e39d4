package netedge

const (
	// ReservedFiles are kept for what is neither a client nor a Redis
	// connection: standard streams, the listeners (ADDR, PPROF_ADDR), the
	// poller, the files the process metrics read in /proc, the embedded
	// Redis's listener, and the one accept that finds the rest in use.
	ReservedFiles = 64
	// MinHTTPConns is the smallest share of connections still in HTTP:
	// page loads, API calls, handshakes, and the 503 that refuses a
	// WebSocket beyond MAX_CONNS all need one.
	MinHTTPConns = 16
	// httpShare: unless MAX_CONNS is set, one client descriptor in this
	// many is kept for HTTP, so that pages and refusals are still served
	// when the WebSockets are full, and a flood of silent sockets fills
	// this share only, never the WebSockets'.
	httpShare = 8
	// tailShare: the tail's own Redis connections (a few, whatever the
	// rooms: see streams.TailMode) get at most one descriptor in this many,
	// which matters only under a tiny descriptor limit.
	tailShare = 8
	// maxLimit caps the limit planned from (RLIM_INFINITY is not a number
	// of descriptors; the kernel allows about a million at most anyway).
	maxLimit = 1 << 24
)

// Budget is how the process's descriptor limit is spent. Every figure is
// a number of descriptors, each held by one connection.
type Budget struct {
	Limit int // RLIMIT_NOFILE (soft), at most maxLimit
	Tails int // room-tail Redis connections at most: the tail pool's size
	// Redis is what the Redis connections take: the command pool and the
	// tails, twice over for an embedded Redis (both ends in this process).
	Redis     int
	Clients   int // what is left for client connections
	MaxConns  int // open WebSocket connections at most (MAX_CONNS)
	HTTPConns int // client connections still in HTTP at most
}

// Plan splits limit descriptors for a Redis command pool of redisPool
// connections and a tail pool of at most maxTails. MaxConns takes the
// default: what HTTP's share leaves of the clients' part.
func Plan(limit uint64, redisPool, maxTails int, embedded bool) Budget {
	b := Budget{Limit: int(min(limit, maxLimit))}
	b.Tails = max(1, min(maxTails, b.Limit/tailShare))
	b.Redis = redisPool + b.Tails
	if embedded {
		b.Redis *= 2
	}
	b.Clients = b.Limit - ReservedFiles - b.Redis
	http := max(MinHTTPConns, b.Clients/httpShare)
	return b.WithMaxConns(b.Clients - http)
}

// MostConns is the highest MAX_CONNS the budget allows: all the clients'
// part but HTTP's smallest share. Below 1, Redis alone takes too much.
func (b Budget) MostConns() int { return b.Clients - MinHTTPConns }

// WithMaxConns sets MAX_CONNS; HTTP gets the rest of the clients' part.
func (b Budget) WithMaxConns(n int) Budget {
	b.MaxConns, b.HTTPConns = n, b.Clients-n
	return b
}
