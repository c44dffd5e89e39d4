package main

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/handlers"
	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// envMap is a getenv over a map.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigDefaults(t *testing.T) {
	c, err := loadConfig(envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		Addr:               ":8080",
		EmbeddedRedisAddr:  "127.0.0.1:6379",
		Prefix:             "chat",
		HistoryMaxLen:      10000,
		HistoryOnJoin:      50,
		MaxMessageBytes:    4096,
		DedupWindow:        10 * time.Minute,
		TailBuffer:         1024,
		RedisPoolSize:      10 * runtime.GOMAXPROCS(0),
		AckTimeout:         time.Second,
		ShutdownTimeout:    10 * time.Second,
		HeaderTimeout:      5 * time.Second,
		IdleTimeout:        60 * time.Second,
		PresenceTTL:        30 * time.Second,
		PresenceHeartbeat:  10 * time.Second,
		PresenceMaxMembers: 1000,
		UnreadCap:          100,
		LogLevel:           slog.LevelInfo,
		LogFormat:          "text",
		Limits:             handlers.Limits{Rate: 10, Burst: 20, UserRate: 20, UserBurst: 40, MaxConnsPerIP: 256, MaxReplay: 100000},
		Hooks: hooksConfig{
			Webhook: hooks.WebhookOptions{ClaimAfter: 30 * time.Second, Concurrency: 16, MaxAttempts: 10, Batch: 100, Timeout: 10 * time.Second,
				Backoff: time.Second, From: streams.HookFromEnabled},
			Publish: hooks.PublishOptions{Timeout: 2 * time.Second, OnError: hooks.Refuse},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestConfigReadsEveryVariable(t *testing.T) {
	env := map[string]string{
		"ADDR":                  "127.0.0.1:9999",
		"REDIS_URL":             "redis://10.0.0.1:6380,redis://10.0.0.2:6380",
		"REDIS_SENTINEL_MASTER": "mymaster",
		"REDIS_CLUSTER":         "true",
		"EMBEDDED_REDIS_ADDR":   "127.0.0.1:7000",
		"CHAT_PREFIX":           "xr:prod.v1_a-b",
		"HISTORY_MAXLEN":        "500",
		"HISTORY_ON_JOIN":       "20",
		"MAX_MESSAGE_BYTES":     "1000",
		"DEDUP_WINDOW":          "2m30s",
		"API_KEY":               "s3cret",
		"ALLOWED_ORIGINS":       "https://a.example.com/, http://b.example.com:8080 ,*",
		"TAIL_BUFFER":           "64",
		"TAIL_MODE":             "blocking",
		"TAIL_READ_BACK":        "false",
		"REDIS_POOL_SIZE":       "33",
		"REDIS_ACK_REPLICAS":    "1",
		"REDIS_ACK_TIMEOUT":     "250ms",
		"SHUTDOWN_TIMEOUT":      "3s",
		"PRESENCE_TTL":          "45s",
		"PRESENCE_HEARTBEAT":    "15s",
		"PRESENCE_MAX_MEMBERS":  "200",
		"UNREAD_CAP":            "25",
		"LOG_LEVEL":             "debug",
		"LOG_FORMAT":            "json",
		"AUTH_SECRET":           "0123456789abcdef0123456789abcdef",
		"RATE_LIMIT":            "2.5",
		"RATE_BURST":            "5",
		"USER_RATE_LIMIT":       "0",
		"USER_RATE_BURST":       "9",
		"MAX_CONNS_PER_IP":      "0",
		"MAX_CONNS":             "5000",
		"HEADER_TIMEOUT":        "2s",
		"IDLE_TIMEOUT":          "90s",
		"TRUSTED_PROXIES":       "10.0.0.0/8, 127.0.0.1,::1",
		"MAX_REPLAY":            "500",
		"PPROF_ADDR":            "127.0.0.1:6060",
		"WEBHOOK_URL":           "https://app.example.com/hooks/xroom",
		"WEBHOOK_SECRET":        "a webhook secret key",
		"WEBHOOK_CLAIM_AFTER":   "45s",
		"WEBHOOK_CONCURRENCY":   "4",
		"WEBHOOK_MAX_ATTEMPTS":  "3",
		"WEBHOOK_BATCH":         "20",
		"WEBHOOK_TIMEOUT":       "3s",
		"WEBHOOK_BACKOFF":       "250ms",
		"WEBHOOK_FROM":          "start",
		"PUBLISH_HOOK_URL":      "http://127.0.0.1:3000/check",
		"PUBLISH_HOOK_TIMEOUT":  "500ms",
		"PUBLISH_HOOK_ON_ERROR": "allow",
	}
	c, err := loadConfig(envMap(env))
	if err != nil {
		t.Fatal(err)
	}
	want := config{
		Addr:                "127.0.0.1:9999",
		RedisURL:            "redis://10.0.0.1:6380,redis://10.0.0.2:6380",
		RedisSentinelMaster: "mymaster",
		RedisCluster:        true,
		EmbeddedRedisAddr:   "127.0.0.1:7000",
		Prefix:              "xr:prod.v1_a-b",
		HistoryMaxLen:       500,
		HistoryOnJoin:       20,
		MaxMessageBytes:     1000,
		DedupWindow:         150 * time.Second,
		APIKey:              "s3cret",
		AllowedOrigins:      []string{"https://a.example.com", "http://b.example.com:8080", "*"},
		TailBuffer:          64,
		TailMode:            streams.ModeBlocking,
		TailNoReadBack:      true,
		RedisPoolSize:       33,
		AckReplicas:         1,
		AckTimeout:          250 * time.Millisecond,
		ShutdownTimeout:     3 * time.Second,
		HeaderTimeout:       2 * time.Second,
		IdleTimeout:         90 * time.Second,
		PresenceTTL:         45 * time.Second,
		PresenceHeartbeat:   15 * time.Second,
		PresenceMaxMembers:  200,
		UnreadCap:           25,
		LogLevel:            slog.LevelDebug,
		LogFormat:           "json",
		AuthSecret:          "0123456789abcdef0123456789abcdef",
		Limits: handlers.Limits{Rate: 2.5, Burst: 5, UserRate: 0, UserBurst: 9, MaxConnsPerIP: 0, MaxConns: 5000, MaxReplay: 500,
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}},
		PprofAddr: "127.0.0.1:6060",
		Hooks: hooksConfig{
			Webhook: hooks.WebhookOptions{URL: "https://app.example.com/hooks/xroom", Secret: "a webhook secret key",
				ClaimAfter: 45 * time.Second, Concurrency: 4, MaxAttempts: 3, Batch: 20, Timeout: 3 * time.Second, Backoff: 250 * time.Millisecond,
				From: streams.HookFromStart},
			Publish: hooks.PublishOptions{URL: "http://127.0.0.1:3000/check", Secret: "a webhook secret key",
				Timeout: 500 * time.Millisecond, OnError: hooks.Allow},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("config:\n got %+v\nwant %+v", c, want)
	}
	// The test above must set every field: a new field needs a line here
	// (and in .env.example).
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("field %s not covered by this test", v.Type().Field(i).Name)
		}
	}

	// Surrounding spaces are ignored.
	c, err = loadConfig(envMap(map[string]string{"CHAT_PREFIX": "  room  ", "HISTORY_MAXLEN": " 7 ", "LOG_LEVEL": "WARN"}))
	if err != nil || c.Prefix != "room" || c.HistoryMaxLen != 7 || c.LogLevel != slog.LevelWarn {
		t.Fatalf("spaces: %+v %v", c, err)
	}
	// HISTORY_ON_JOIN defaults to 50 but may not exceed HISTORY_MAXLEN when set.
	if c.HistoryOnJoin != 50 {
		t.Errorf("HistoryOnJoin = %d with HISTORY_MAXLEN 7 and no HISTORY_ON_JOIN", c.HistoryOnJoin)
	}
	// Zero is allowed for HISTORY_ON_JOIN and SHUTDOWN_TIMEOUT.
	c, err = loadConfig(envMap(map[string]string{"HISTORY_ON_JOIN": "0", "SHUTDOWN_TIMEOUT": "0s"}))
	if err != nil || c.HistoryOnJoin != 0 || c.ShutdownTimeout != 0 {
		t.Fatalf("zeros: %+v %v", c, err)
	}
}

func TestConfigBadValues(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		name string // the variable the error must name
	}{
		{map[string]string{"HISTORY_MAXLEN": "abc"}, "HISTORY_MAXLEN"},
		{map[string]string{"HISTORY_MAXLEN": "0"}, "HISTORY_MAXLEN"},
		{map[string]string{"HISTORY_MAXLEN": "-5"}, "HISTORY_MAXLEN"},
		{map[string]string{"HISTORY_MAXLEN": "1e3"}, "HISTORY_MAXLEN"},
		{map[string]string{"HISTORY_ON_JOIN": "-1"}, "HISTORY_ON_JOIN"},
		{map[string]string{"HISTORY_MAXLEN": "100", "HISTORY_ON_JOIN": "101"}, "HISTORY_ON_JOIN"},
		{map[string]string{"MAX_MESSAGE_BYTES": "-1"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"MAX_MESSAGE_BYTES": "0"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"MAX_MESSAGE_BYTES": "4KB"}, "MAX_MESSAGE_BYTES"},
		{map[string]string{"TAIL_BUFFER": "8"}, "TAIL_BUFFER"},
		{map[string]string{"TAIL_MODE": "pubsub"}, "TAIL_MODE"},
		{map[string]string{"TAIL_READ_BACK": "sometimes"}, "TAIL_READ_BACK"},
		{map[string]string{"REDIS_POOL_SIZE": "0"}, "REDIS_POOL_SIZE"},
		{map[string]string{"REDIS_POOL_SIZE": "lots"}, "REDIS_POOL_SIZE"},
		{map[string]string{"REDIS_ACK_REPLICAS": "-1"}, "REDIS_ACK_REPLICAS"},
		{map[string]string{"REDIS_ACK_REPLICAS": "one"}, "REDIS_ACK_REPLICAS"},
		{map[string]string{"REDIS_ACK_TIMEOUT": "0s"}, "REDIS_ACK_TIMEOUT"}, // WAIT 0 waits forever
		{map[string]string{"REDIS_ACK_TIMEOUT": "3s"}, "REDIS_ACK_TIMEOUT"},
		{map[string]string{"REDIS_ACK_TIMEOUT": "1000"}, "REDIS_ACK_TIMEOUT"}, // no unit
		{map[string]string{"DEDUP_WINDOW": "soon"}, "DEDUP_WINDOW"},
		{map[string]string{"DEDUP_WINDOW": "600"}, "DEDUP_WINDOW"}, // no unit
		{map[string]string{"DEDUP_WINDOW": "500ms"}, "DEDUP_WINDOW"},
		{map[string]string{"SHUTDOWN_TIMEOUT": "-1s"}, "SHUTDOWN_TIMEOUT"},
		{map[string]string{"PRESENCE_TTL": "500ms"}, "PRESENCE_TTL"},
		{map[string]string{"PRESENCE_HEARTBEAT": "50ms"}, "PRESENCE_HEARTBEAT"},
		{map[string]string{"PRESENCE_HEARTBEAT": "30s"}, "PRESENCE_HEARTBEAT"},                      // not below the default TTL
		{map[string]string{"PRESENCE_TTL": "5s", "PRESENCE_HEARTBEAT": "5s"}, "PRESENCE_HEARTBEAT"}, // equal to the TTL
		{map[string]string{"PRESENCE_MAX_MEMBERS": "0"}, "PRESENCE_MAX_MEMBERS"},
		{map[string]string{"UNREAD_CAP": "0"}, "UNREAD_CAP"},
		{map[string]string{"UNREAD_CAP": "1001"}, "UNREAD_CAP"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
		{map[string]string{"PPROF_ADDR": ":6060"}, "PPROF_ADDR"}, // every interface: not loopback
		{map[string]string{"PPROF_ADDR": "10.0.0.1:6060"}, "PPROF_ADDR"},
		{map[string]string{"PPROF_ADDR": "6060"}, "PPROF_ADDR"},
		{map[string]string{"REDIS_CLUSTER": "maybe"}, "REDIS_CLUSTER"},
		{map[string]string{"CHAT_PREFIX": "chat{x}"}, "CHAT_PREFIX"},
		{map[string]string{"CHAT_PREFIX": "my chat"}, "CHAT_PREFIX"},
		{map[string]string{"CHAT_PREFIX": strings.Repeat("p", 65)}, "CHAT_PREFIX"},
		{map[string]string{"ALLOWED_ORIGINS": "example.com"}, "ALLOWED_ORIGINS"},
		{map[string]string{"ALLOWED_ORIGINS": "https://ok.example.com,example.com"}, "ALLOWED_ORIGINS"},
		{map[string]string{"REDIS_URL": "http://x"}, "REDIS_URL"},
		{map[string]string{"REDIS_URL": "redis://localhost:6379/notadb"}, "REDIS_URL"},
		{map[string]string{"REDIS_URL": " , "}, "REDIS_URL"},
		{map[string]string{"REDIS_SENTINEL_MASTER": "mymaster"}, "REDIS_SENTINEL_MASTER"},
		{map[string]string{"RATE_LIMIT": "-1"}, "RATE_LIMIT"},
		{map[string]string{"RATE_LIMIT": "fast"}, "RATE_LIMIT"},
		{map[string]string{"RATE_LIMIT": "NaN"}, "RATE_LIMIT"},
		{map[string]string{"RATE_BURST": "0"}, "RATE_BURST"},
		{map[string]string{"USER_RATE_LIMIT": "1e9"}, "USER_RATE_LIMIT"},
		{map[string]string{"USER_RATE_BURST": "-3"}, "USER_RATE_BURST"},
		{map[string]string{"MAX_CONNS_PER_IP": "-1"}, "MAX_CONNS_PER_IP"},
		{map[string]string{"MAX_CONNS": "-1"}, "MAX_CONNS"},
		{map[string]string{"MAX_CONNS": "many"}, "MAX_CONNS"},
		{map[string]string{"HEADER_TIMEOUT": "10ms"}, "HEADER_TIMEOUT"},
		{map[string]string{"HEADER_TIMEOUT": "5"}, "HEADER_TIMEOUT"}, // no unit
		{map[string]string{"IDLE_TIMEOUT": "0s"}, "IDLE_TIMEOUT"},
		{map[string]string{"MAX_REPLAY": "lots"}, "MAX_REPLAY"},
		{map[string]string{"TRUSTED_PROXIES": "proxy.local"}, "TRUSTED_PROXIES"},
		{map[string]string{"TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"},
		{map[string]string{"WEBHOOK_URL": "ftp://app.example.com/hook"}, "WEBHOOK_URL"},
		{map[string]string{"WEBHOOK_URL": "app.example.com/hook"}, "WEBHOOK_URL"},
		{map[string]string{"WEBHOOK_URL": "http://"}, "WEBHOOK_URL"},
		{map[string]string{"WEBHOOK_CLAIM_AFTER": "-5s"}, "WEBHOOK_CLAIM_AFTER"},
		{map[string]string{"WEBHOOK_CLAIM_AFTER": "100ms"}, "WEBHOOK_CLAIM_AFTER"},
		{map[string]string{"WEBHOOK_CONCURRENCY": "0"}, "WEBHOOK_CONCURRENCY"},
		{map[string]string{"WEBHOOK_MAX_ATTEMPTS": "-1"}, "WEBHOOK_MAX_ATTEMPTS"},
		{map[string]string{"WEBHOOK_BATCH": "5000"}, "WEBHOOK_BATCH"},
		{map[string]string{"WEBHOOK_TIMEOUT": "-1s"}, "WEBHOOK_TIMEOUT"},
		{map[string]string{"WEBHOOK_BACKOFF": "soon"}, "WEBHOOK_BACKOFF"},
		{map[string]string{"WEBHOOK_FROM": "beginning"}, "WEBHOOK_FROM"},
		{map[string]string{"PUBLISH_HOOK_URL": "mailto:mod@example.com"}, "PUBLISH_HOOK_URL"},
		{map[string]string{"PUBLISH_HOOK_TIMEOUT": "-100ms"}, "PUBLISH_HOOK_TIMEOUT"},
		{map[string]string{"PUBLISH_HOOK_TIMEOUT": "2m"}, "PUBLISH_HOOK_TIMEOUT"},
		{map[string]string{"PUBLISH_HOOK_ON_ERROR": "ignore"}, "PUBLISH_HOOK_ON_ERROR"},
	} {
		_, err := loadConfig(envMap(tc.env))
		if err == nil {
			t.Errorf("%v: no error", tc.env)
			continue
		}
		value := strings.TrimSpace(tc.env[tc.name])
		if tc.name == "ALLOWED_ORIGINS" {
			value = "example.com" // the bad entry
		}
		if want := tc.name + `="` + value + `"`; !strings.Contains(err.Error(), want) {
			t.Errorf("%v: error %q does not name %s", tc.env, err, want)
		}
	}
}

// The descriptor limit is spent on Redis, HTTP and WebSockets: MAX_CONNS
// is derived from it unless set, and a setting it cannot hold is an error
// that names the variable.
func TestPlanDescriptors(t *testing.T) {
	c, err := loadConfig(envMap(map[string]string{"REDIS_URL": "redis://r:6379", "REDIS_POOL_SIZE": "20"}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.planDescriptors(20000)
	if err != nil || b.MaxConns != 17423 || b.HTTPConns != 2489 || b.Tails != streams.TailPoolSize {
		t.Fatalf("20000 descriptors: %+v, %v", b, err)
	}
	c.Limits.MaxConns = 10000
	if b, err = c.planDescriptors(20000); err != nil || b.MaxConns != 10000 || b.HTTPConns != 9912 {
		t.Fatalf("MAX_CONNS=10000: %+v, %v; want HTTP to get the rest", b, err)
	}
	c.Limits.MaxConns = 20000
	if _, err = c.planDescriptors(20000); err == nil || !strings.Contains(err.Error(), `MAX_CONNS="20000"`) || !strings.Contains(err.Error(), "at most 19896") {
		t.Fatalf("MAX_CONNS over the limit: %v", err)
	}
	c.Limits.MaxConns, c.RedisPoolSize = 0, 1000
	if _, err = c.planDescriptors(1024); err == nil || !strings.Contains(err.Error(), `REDIS_POOL_SIZE="1000"`) {
		t.Fatalf("a pool that takes every descriptor: %v", err)
	}
	// The embedded Redis holds both ends of each connection.
	c.RedisURL, c.RedisPoolSize = "", 20
	if b, err = c.planDescriptors(20000); err != nil || b.Redis != 2*(20+streams.TailPoolSize) {
		t.Fatalf("embedded: %+v, %v", b, err)
	}
	// Unknown limit: nothing planned.
	if b, err = c.planDescriptors(0); err != nil || b.MaxConns != 0 || b.HTTPConns != 0 || b.Tails != streams.TailPoolSize {
		t.Fatalf("no limit: %+v, %v", b, err)
	}
}

func TestDotEnv(t *testing.T) {
	t.Chdir(t.TempDir())
	// No .env: fine, the environment alone.
	get, err := withDotEnv(envMap(map[string]string{"CHAT_PREFIX": "fromenv"}))
	if err != nil {
		t.Fatalf("missing default .env: %v", err)
	}
	if get("CHAT_PREFIX") != "fromenv" || get("HISTORY_MAXLEN") != "" {
		t.Fatal("getenv without .env changed values")
	}

	dotenv := "# comment\nCHAT_PREFIX=fromfile\nHISTORY_MAXLEN=500\nexport LOG_FORMAT=json\nAPI_KEY=\"quoted value\"\n"
	if err := os.WriteFile(".env", []byte(dotenv), 0o600); err != nil {
		t.Fatal(err)
	}
	get, err = withDotEnv(envMap(map[string]string{"CHAT_PREFIX": "fromenv"}))
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(get)
	if err != nil {
		t.Fatal(err)
	}
	if c.Prefix != "fromenv" {
		t.Errorf("Prefix = %q: the environment must win over .env", c.Prefix)
	}
	if c.HistoryMaxLen != 500 || c.LogFormat != "json" || c.APIKey != "quoted value" {
		t.Errorf(".env values not used: %+v", c)
	}
	if c.Addr != ":8080" {
		t.Errorf("Addr = %q, want the default", c.Addr)
	}

	// ENV_FILE names another file.
	other := filepath.Join(t.TempDir(), "xroom.env")
	if err := os.WriteFile(other, []byte("CHAT_PREFIX=other\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get, err = withDotEnv(envMap(map[string]string{"ENV_FILE": other}))
	if err != nil {
		t.Fatal(err)
	}
	if get("CHAT_PREFIX") != "other" || get("HISTORY_MAXLEN") != "" {
		t.Errorf("ENV_FILE: CHAT_PREFIX=%q HISTORY_MAXLEN=%q; want other and nothing from ./.env", get("CHAT_PREFIX"), get("HISTORY_MAXLEN"))
	}

	// ENV_FILE naming a missing file is an error: the operator meant it.
	missing := filepath.Join(t.TempDir(), "nope.env")
	if _, err := withDotEnv(envMap(map[string]string{"ENV_FILE": missing})); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("ENV_FILE=%s: error %v, want one naming the file", missing, err)
	}
	// ... and run reports it.
	// (A cancelled context: should run start anyway, it stops at once.)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	runEnv := map[string]string{"ENV_FILE": missing, "ADDR": "127.0.0.1:0", "EMBEDDED_REDIS_ADDR": "127.0.0.1:0"}
	if err := run(cancelled, envMap(runEnv), &syncBuffer{}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("run with ENV_FILE=%s: %v", missing, err)
	}
	// A bad value from the file is reported like one from the environment.
	if err := os.WriteFile(".env", []byte("LOG_FORMAT=xml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get, _ = withDotEnv(envMap(nil))
	if _, err := loadConfig(get); err == nil || !strings.Contains(err.Error(), `LOG_FORMAT="xml"`) {
		t.Errorf("bad value in .env: %v", err)
	}
}

func mustOptions(t *testing.T, c config) *redis.UniversalOptions {
	t.Helper()
	o, err := c.redisOptions()
	if err != nil {
		t.Fatalf("redisOptions(%+v): %v", c, err)
	}
	return o
}

// clientKind builds the client the options make (without connecting) and names its type.
func clientKind(t *testing.T, o *redis.UniversalOptions) string {
	t.Helper()
	c := redis.NewUniversalClient(o)
	defer c.Close()
	switch c.(type) {
	case *redis.Client:
		return "single"
	case *redis.ClusterClient:
		return "cluster"
	}
	return reflect.TypeOf(c).String()
}

func TestRedisOptions(t *testing.T) {
	o := mustOptions(t, config{RedisURL: "redis://127.0.0.1:6390"})
	if k := clientKind(t, o); k != "single" || !reflect.DeepEqual(o.Addrs, []string{"127.0.0.1:6390"}) || o.TLSConfig != nil {
		t.Errorf("one URL: %s %v tls=%v", k, o.Addrs, o.TLSConfig)
	}
	if o.ClientName != "xroom" || !o.ContextTimeoutEnabled || !o.DisableIdentity || o.MaintNotificationsConfig == nil || o.MaintNotificationsConfig.Mode != "disabled" {
		t.Errorf("ClientName %q ContextTimeoutEnabled %v", o.ClientName, o.ContextTimeoutEnabled)
	}
	// REDIS_POOL_SIZE is a hard cap on the connections.
	o = mustOptions(t, config{RedisURL: "redis://127.0.0.1:6390", RedisPoolSize: 7})
	if o.PoolSize != 7 || o.MaxActiveConns != 7 {
		t.Errorf("REDIS_POOL_SIZE 7: PoolSize %d MaxActiveConns %d", o.PoolSize, o.MaxActiveConns)
	}

	o = mustOptions(t, config{RedisURL: "127.0.0.1:6391"}) // no scheme
	if k := clientKind(t, o); k != "single" || !reflect.DeepEqual(o.Addrs, []string{"127.0.0.1:6391"}) {
		t.Errorf("bare address: %s %v", k, o.Addrs)
	}

	o = mustOptions(t, config{RedisURL: "rediss://alice:p%40ss@redis.example.com:6380/3"})
	if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.example.com" {
		t.Errorf("rediss: TLSConfig %+v", o.TLSConfig)
	}
	if o.Username != "alice" || o.Password != "p@ss" || o.DB != 3 || !reflect.DeepEqual(o.Addrs, []string{"redis.example.com:6380"}) {
		t.Errorf("rediss: user %q password %q db %d addrs %v", o.Username, o.Password, o.DB, o.Addrs)
	}
	if k := clientKind(t, o); k != "single" {
		t.Errorf("rediss: %s client", k)
	}
	if c, ok := redis.NewUniversalClient(o).(*redis.Client); ok {
		opt := c.Options()
		if opt.Password != "p@ss" || opt.DB != 3 || opt.TLSConfig == nil || opt.Addr != "redis.example.com:6380" {
			t.Errorf("client options %+v", opt)
		}
		c.Close()
	}
	o = mustOptions(t, config{RedisURL: "redis://:pw@h:1/2"})
	if o.Password != "pw" || o.DB != 2 || o.Username != "" {
		t.Errorf("password-only URL: %q %q %d", o.Username, o.Password, o.DB)
	}

	o = mustOptions(t, config{RedisURL: "redis://10.0.0.1:7000, redis://10.0.0.2:7000 ,10.0.0.3:7000"})
	if k := clientKind(t, o); k != "cluster" || !reflect.DeepEqual(o.Addrs, []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}) {
		t.Errorf("comma list: %s %v", k, o.Addrs)
	}

	o = mustOptions(t, config{RedisURL: "redis://10.0.0.1:7000", RedisCluster: true})
	if k := clientKind(t, o); k != "cluster" || !reflect.DeepEqual(o.Addrs, []string{"10.0.0.1:7000"}) {
		t.Errorf("REDIS_CLUSTER with one URL: %s %v", k, o.Addrs)
	}

	o = mustOptions(t, config{RedisURL: "redis://:sentpw@10.0.0.1:26379,redis://10.0.0.2:26379", RedisSentinelMaster: "mymaster"})
	c := redis.NewUniversalClient(o)
	if _, ok := c.(*redis.Client); !ok || o.MasterName != "mymaster" {
		t.Errorf("sentinel: %T master %q", c, o.MasterName)
	}
	c.Close()
	if fo := o.Failover(); fo.MasterName != "mymaster" || !reflect.DeepEqual(fo.SentinelAddrs, []string{"10.0.0.1:26379", "10.0.0.2:26379"}) || fo.SentinelPassword != "sentpw" {
		t.Errorf("sentinel failover options: master %q sentinels %v password %q", fo.MasterName, fo.SentinelAddrs, fo.SentinelPassword)
	}

	// Through loadConfig: the same choices from the environment.
	for _, tc := range []struct {
		env  map[string]string
		kind string
	}{
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:1"}, "single"},
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:1,redis://127.0.0.1:2"}, "cluster"},
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:1", "REDIS_CLUSTER": "true"}, "cluster"},
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:1", "REDIS_CLUSTER": "false"}, "single"},
	} {
		cfg, err := loadConfig(envMap(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		if k := clientKind(t, mustOptions(t, cfg)); k != tc.kind {
			t.Errorf("%v: %s client, want %s", tc.env, k, tc.kind)
		}
	}
}

// TestRedisOptionsFailoverType checks that REDIS_SENTINEL_MASTER builds a
// Sentinel-backed client: go-redis returns it as *redis.Client whose
// options come from FailoverOptions, so check it by its dialer's target.
func TestRedisOptionsFailoverType(t *testing.T) {
	cfg, err := loadConfig(envMap(map[string]string{"REDIS_URL": "redis://127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "mymaster"}))
	if err != nil {
		t.Fatal(err)
	}
	o := mustOptions(t, cfg)
	c := redis.NewUniversalClient(o)
	defer c.Close()
	cl, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("%T, want the failover *redis.Client", c)
	}
	// A failover client names its master, not a fixed address.
	if addr := cl.Options().Addr; addr != "FailoverClient" {
		t.Errorf("Options().Addr = %q, want go-redis's FailoverClient marker", addr)
	}
}

// configVars lists the variables config.go and config_hooks.go read, from
// their source.
func configVars(t *testing.T) []string {
	t.Helper()
	re := regexp.MustCompile(`(?:r\.[a-z]+|getenv)\("([A-Z][A-Z0-9_]*)"`)
	seen := map[string]bool{}
	for _, file := range []string{"config.go", "config_hooks.go"} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			seen[m[1]] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func TestEnvExampleListsEveryVariable(t *testing.T) {
	names := configVars(t)
	// Sanity: the parse finds what it must.
	for _, n := range []string{"ADDR", "REDIS_URL", "ENV_FILE", "HISTORY_MAXLEN", "LOG_LEVEL", "ALLOWED_ORIGINS"} {
		if !contains(names, n) {
			t.Fatalf("parsing config.go found %v, not %s", names, n)
		}
	}
	data, err := os.ReadFile("../.env.example")
	if os.IsNotExist(err) {
		t.Fatalf(".env.example is missing at the repository root; it must list every variable config.go reads: %s", strings.Join(names, ", "))
	}
	if err != nil {
		t.Fatal(err)
	}
	// A variable is listed as NAME=value or, commented out, # NAME=value.
	listedRe := regexp.MustCompile(`(?m)^\s*(?:#\s*)?(?:export\s+)?([A-Z][A-Z0-9_]*)=`)
	listed := map[string]bool{}
	for _, m := range listedRe.FindAllStringSubmatch(string(data), -1) {
		listed[m[1]] = true
	}
	for _, n := range names {
		if !listed[n] {
			t.Errorf(".env.example does not list %s (read by config.go)", n)
		}
	}
	for n := range listed {
		if !contains(names, n) {
			t.Errorf(".env.example lists %s, which config.go does not read", n)
		}
	}
	// Uncommented values must load: the example is a working config.
	if _, err := loadConfig(dotEnvExample(t, data)); err != nil {
		t.Errorf(".env.example as a config: %v", err)
	}
}

func dotEnvExample(t *testing.T, data []byte) func(string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "example.env")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	get, err := withDotEnv(envMap(map[string]string{"ENV_FILE": path}))
	if err != nil {
		t.Fatalf("reading .env.example: %v", err)
	}
	return get
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
