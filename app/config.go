package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/netedge"
	"github.com/xroom/xroom/streams"
)

// config is everything xroom reads from the environment; .env.example lists it.
type config struct {
	Addr                string
	RedisURL            string
	RedisSentinelMaster string
	RedisCluster        bool
	EmbeddedRedisAddr   string
	Prefix              string
	HistoryMaxLen       int64
	HistoryOnJoin       int
	MaxMessageBytes     int
	DedupWindow         time.Duration
	APIKey              string
	AllowedOrigins      []string
	AuthSecret          string          // HS256 key of user tokens; never logged
	Limits              handlers.Limits // rates, connections per address, replay size
	TailBuffer          int
	TailMode            streams.TailMode
	TailNoReadBack      bool // TAIL_READ_BACK=false
	RedisPoolSize       int
	AckReplicas         int           // REDIS_ACK_REPLICAS: replicas WAIT must confirm before an ack
	AckTimeout          time.Duration // REDIS_ACK_TIMEOUT: how long that WAIT may take
	ShutdownTimeout     time.Duration
	HeaderTimeout       time.Duration // a connection's first byte, then its request headers
	IdleTimeout         time.Duration // a keep-alive connection between requests
	PresenceTTL         time.Duration
	PresenceHeartbeat   time.Duration
	PresenceMaxMembers  int
	UnreadCap           int // UNREAD_CAP: unread counts are exact up to it
	LogLevel            slog.Level
	LogFormat           string
	PprofAddr           string
	Hooks               hooksConfig // webhooks and the publish hook (config_hooks.go)
}

const (
	// maxAckReplicas: more replicas than any deployment runs is a typo.
	maxAckReplicas = 100
	// minAckTimeout: WAIT takes milliseconds, and WAIT 0 would wait forever.
	minAckTimeout = time.Millisecond
	// maxAckTimeout keeps WAIT inside go-redis's 3 s read timeout and the
	// server's 5 s bound on an append.
	maxAckTimeout = 2 * time.Second
	// maxUnreadCap bounds the entries one room's unread count reads in
	// Redis (cap+1): a badge needs no exact count in the thousands.
	maxUnreadCap = 1000
)

// withDotEnv returns a getenv that falls back to the .env file (ENV_FILE,
// default ".env") for variables the environment does not set. A missing
// file is fine; a malformed one is an error.
func withDotEnv(getenv func(string) string) (func(string) string, error) {
	path := getenv("ENV_FILE")
	explicit := path != ""
	if !explicit {
		path = ".env"
	}
	file, err := godotenv.Read(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && !explicit {
			return getenv, nil
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return file[k]
	}, nil
}

// envReader reads variables with defaults and keeps the first error, which
// names the variable and the value.
type envReader struct {
	getenv func(string) string
	err    error
}

func (r *envReader) fail(name, value, want string) {
	if r.err == nil {
		r.err = fmt.Errorf("invalid %s=%q: %s", name, value, want)
	}
}

func (r *envReader) str(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

func (r *envReader) integer(name string, def, lo, hi int64) int64 {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < lo || n > hi {
		r.fail(name, raw, fmt.Sprintf("want a whole number from %d to %d", lo, hi))
		return def
	}
	return n
}

func (r *envReader) duration(name string, def, lo time.Duration) time.Duration {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < lo {
		r.fail(name, raw, fmt.Sprintf("want a duration of at least %s, such as 10s or 5m", lo))
		return def
	}
	return d
}

func (r *envReader) boolean(name string, def bool) bool {
	raw := r.str(name, "")
	if raw == "" {
		return def
	}
	b, err := strconv.ParseBool(raw)
	if err != nil {
		r.fail(name, raw, "want true or false")
	}
	return b
}

func loadConfig(getenv func(string) string) (config, error) {
	r := &envReader{getenv: getenv}
	c := config{
		Addr:                r.str("ADDR", ":8080"),
		RedisURL:            r.str("REDIS_URL", ""),
		RedisSentinelMaster: r.str("REDIS_SENTINEL_MASTER", ""),
		RedisCluster:        r.boolean("REDIS_CLUSTER", false),
		EmbeddedRedisAddr:   r.str("EMBEDDED_REDIS_ADDR", "127.0.0.1:6379"),
		Prefix:              r.str("CHAT_PREFIX", "chat"),
		HistoryMaxLen:       r.integer("HISTORY_MAXLEN", 10000, 1, 1<<40),
		MaxMessageBytes:     int(r.integer("MAX_MESSAGE_BYTES", 4096, 1, 1<<20)),
		DedupWindow:         r.duration("DEDUP_WINDOW", 10*time.Minute, time.Second),
		APIKey:              r.str("API_KEY", ""),
		TailBuffer:          int(r.integer("TAIL_BUFFER", 1024, 16, 1<<20)),
		RedisPoolSize:       int(r.integer("REDIS_POOL_SIZE", int64(10*runtime.GOMAXPROCS(0)), 1, 10000)),
		AckReplicas:         int(r.integer("REDIS_ACK_REPLICAS", 0, 0, maxAckReplicas)),
		AckTimeout:          r.duration("REDIS_ACK_TIMEOUT", time.Second, minAckTimeout),
		ShutdownTimeout:     r.duration("SHUTDOWN_TIMEOUT", 10*time.Second, 0),
		HeaderTimeout:       r.duration("HEADER_TIMEOUT", handlers.DefaultHeaderTimeout, minEdgeTimeout),
		IdleTimeout:         r.duration("IDLE_TIMEOUT", handlers.DefaultIdleTimeout, minEdgeTimeout),
		PresenceTTL:         r.duration("PRESENCE_TTL", 30*time.Second, time.Second),
		PresenceHeartbeat:   r.duration("PRESENCE_HEARTBEAT", 10*time.Second, 100*time.Millisecond),
		PresenceMaxMembers:  int(r.integer("PRESENCE_MAX_MEMBERS", 1000, 1, 1000000)),
		UnreadCap:           int(r.integer("UNREAD_CAP", streams.DefaultUnreadCap, 1, maxUnreadCap)),
		LogFormat:           r.str("LOG_FORMAT", "text"),
		PprofAddr:           r.str("PPROF_ADDR", ""),
	}
	c.AuthSecret = r.secret("AUTH_SECRET", handlers.MinSecretBytes)
	c.Limits = handlers.Limits{
		Rate:           r.number("RATE_LIMIT", 10, 1e6),
		Burst:          int(r.integer("RATE_BURST", 20, 1, 1e6)),
		UserRate:       r.number("USER_RATE_LIMIT", 20, 1e6),
		UserBurst:      int(r.integer("USER_RATE_BURST", 40, 1, 1e6)),
		MaxConnsPerIP:  int(r.integer("MAX_CONNS_PER_IP", 256, 0, 1e7)),
		MaxConns:       int(r.integer("MAX_CONNS", 0, 0, 1e7)), // 0: planDescriptors derives it
		TrustedProxies: r.prefixes("TRUSTED_PROXIES"),
		MaxReplay:      int(r.integer("MAX_REPLAY", 100000, 0, 1<<40)),
	}
	c.Hooks = r.hooks()
	c.HistoryOnJoin = int(r.integer("HISTORY_ON_JOIN", 50, 0, min(c.HistoryMaxLen, 10000)))
	for _, o := range strings.Split(r.str("ALLOWED_ORIGINS", ""), ",") {
		if o = strings.TrimSpace(o); o != "" {
			if o != "*" && !strings.Contains(o, "://") {
				r.fail("ALLOWED_ORIGINS", o, "want origins such as https://chat.example.com, comma-separated, or *")
			}
			c.AllowedOrigins = append(c.AllowedOrigins, strings.TrimRight(o, "/"))
		}
	}
	if c.PresenceHeartbeat >= c.PresenceTTL {
		r.fail("PRESENCE_HEARTBEAT", r.str("PRESENCE_HEARTBEAT", "10s"), "must be shorter than PRESENCE_TTL ("+c.PresenceTTL.String()+"), or connections would expire between heartbeats")
	}
	if c.AckTimeout > maxAckTimeout {
		r.fail("REDIS_ACK_TIMEOUT", r.str("REDIS_ACK_TIMEOUT", ""), "want at most "+maxAckTimeout.String()+", so that a send is answered before the 5 s bound on Redis calls")
	}
	if m, err := streams.ParseTailMode(r.str("TAIL_MODE", "auto")); err != nil {
		r.fail("TAIL_MODE", r.str("TAIL_MODE", ""), err.Error())
	} else {
		c.TailMode = m
	}
	c.TailNoReadBack = !r.boolean("TAIL_READ_BACK", true)
	if !validPrefix(c.Prefix) {
		r.fail("CHAT_PREFIX", c.Prefix, "want 1 to 64 characters from A-Z a-z 0-9 . _ - :")
	}
	if err := c.LogLevel.UnmarshalText([]byte(r.str("LOG_LEVEL", "info"))); err != nil {
		r.fail("LOG_LEVEL", r.str("LOG_LEVEL", ""), "want debug, info, warn or error")
	}
	if c.PprofAddr != "" {
		if err := checkPprofAddr(c.PprofAddr); err != nil {
			r.fail("PPROF_ADDR", c.PprofAddr, err.Error())
		}
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		r.fail("LOG_FORMAT", c.LogFormat, "want text or json")
	}
	if c.RedisURL != "" && r.err == nil {
		if _, err := c.redisOptions(); err != nil {
			r.fail("REDIS_URL", hidePasswords(c.RedisURL, c.RedisURL), hidePasswords(err.Error(), c.RedisURL))
		}
	}
	if c.RedisURL == "" && c.RedisSentinelMaster != "" {
		r.fail("REDIS_SENTINEL_MASTER", c.RedisSentinelMaster, "needs REDIS_URL to list the Sentinel addresses")
	}
	return c, r.err
}

// minEdgeTimeout is the shortest HEADER_TIMEOUT and IDLE_TIMEOUT: below
// it, a client across the world could not send a request in time.
const minEdgeTimeout = 100 * time.Millisecond

// planDescriptors splits the descriptor limit (netedge.Plan) and checks
// MAX_CONNS and REDIS_POOL_SIZE against it: MAX_CONNS unset (0) takes what
// the limit leaves room for. A limit of 0 (unknown) plans nothing: no
// MAX_CONNS, fasthttp's own connection cap, the tail pool's own size.
func (c config) planDescriptors(limit uint64) (netedge.Budget, error) {
	if limit == 0 {
		return netedge.Budget{Tails: streams.TailPoolSize, MaxConns: c.Limits.MaxConns}, nil
	}
	b := netedge.Plan(limit, c.RedisPoolSize, streams.TailPoolSize, c.RedisURL == "")
	if b.MostConns() < 1 {
		return b, fmt.Errorf("invalid REDIS_POOL_SIZE=\"%d\": with a descriptor limit of %d (ulimit -n), Redis connections (%d, room tails included) leave no room for clients; raise the limit or lower REDIS_POOL_SIZE",
			c.RedisPoolSize, b.Limit, b.Redis)
	}
	if n := c.Limits.MaxConns; n > 0 {
		if n > b.MostConns() {
			return b, fmt.Errorf("invalid MAX_CONNS=\"%d\": a descriptor limit of %d (ulimit -n) leaves room for at most %d WebSocket connections besides Redis (%d) and HTTP; raise the limit or lower MAX_CONNS",
				n, b.Limit, b.MostConns(), b.Redis)
		}
		b = b.WithMaxConns(n)
	}
	return b, nil
}

func validPrefix(p string) bool {
	if p == "" || len(p) > 64 {
		return false
	}
	for _, ch := range p {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.ContainsRune("._-:", ch)) {
			return false
		}
	}
	return true
}

// redisOptions turns REDIS_URL into go-redis options: one URL is a single
// node (or, with REDIS_CLUSTER, a cluster seed), several comma-separated
// URLs are cluster seeds, and with REDIS_SENTINEL_MASTER they are Sentinels.
func (c config) redisOptions() (*redis.UniversalOptions, error) {
	var opts redis.UniversalOptions
	for i, raw := range strings.Split(c.RedisURL, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "redis://" + raw
		}
		o, err := redis.ParseURL(raw)
		if err != nil {
			return nil, fmt.Errorf("want redis:// or rediss:// URLs, comma-separated: %v", err)
		}
		opts.Addrs = append(opts.Addrs, o.Addr)
		if i == 0 {
			opts.Username, opts.Password, opts.DB, opts.TLSConfig = o.Username, o.Password, o.DB, o.TLSConfig
		}
	}
	if len(opts.Addrs) == 0 {
		return nil, errors.New("no address")
	}
	opts.MasterName = c.RedisSentinelMaster
	if opts.MasterName != "" {
		// The URLs name Sentinels; their password, if any, is the master's too.
		opts.SentinelUsername, opts.SentinelPassword = opts.Username, opts.Password
	}
	opts.IsClusterMode = c.RedisCluster
	opts.ClientName = "xroom"
	// A hard cap: go-redis's PoolSize alone lets bursts open more.
	opts.PoolSize, opts.MaxActiveConns = c.RedisPoolSize, c.RedisPoolSize
	// Without it go-redis ignores context deadlines on reads, and a stalled
	// Redis would hang a send for the full read timeout and its retries.
	opts.ContextTimeoutEnabled = true
	// No CLIENT SETINFO on each new connection: Redis before 7.2 answers it
	// with an error, which would show as a Redis error in the metrics and in
	// INFO errorstats, and it costs a round trip per connection. CLIENT LIST
	// still names the connections (ClientName).
	opts.DisableIdentity = true
	// Likewise CLIENT MAINT_NOTIFICATIONS (a Redis Enterprise feature that
	// go-redis tries by default): an error reply from open-source Redis.
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return &opts, nil
}
