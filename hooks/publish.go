package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// OnError is what the publish hook does with a message when the hook
// fails: no answer in time, a 5xx, an answer it cannot read.
type OnError int

const (
	// Refuse the message: the sender gets an error (the default).
	Refuse OnError = iota
	// Allow the message as it was sent.
	Allow
)

// ParseOnError reads PUBLISH_HOOK_ON_ERROR.
func ParseOnError(s string) (OnError, error) {
	switch s {
	case "refuse":
		return Refuse, nil
	case "allow":
		return Allow, nil
	}
	return Refuse, errors.New("want refuse or allow")
}

// PublishOptions configure a PublishHook.
type PublishOptions struct {
	URL     string
	Secret  string        // signs each request as webhooks are signed; "" signs with an empty key
	Timeout time.Duration // how long a message waits for the hook
	OnError OnError
	Logger  *slog.Logger
}

const (
	defaultPublishTimeout = 2 * time.Second
	// publishConns caps the connections to the hook, and as many stay open
	// between requests: every sender waits on the hook, so a busy server
	// keeps many requests in flight. Beyond it requests wait for a
	// connection (and time out as configured) rather than open and close
	// connections by the thousand (a bench with 800 checks in flight and
	// 256 kept open spent 7 × the CPU per message of none).
	publishConns = 256
	// maxRefusalMessage bounds the reason shown to the sender.
	maxRefusalMessage = 1000
)

// PublishHook asks the application before a message is stored: it may
// store it as sent, rewrite it, or refuse it (see Check).
type PublishHook struct {
	opt      PublishOptions
	client   *http.Client
	log      *slog.Logger
	outcomes *prometheus.CounterVec
	seconds  prometheus.Histogram
}

// NewPublishHook returns a hook that POSTs to opt.URL.
func NewPublishHook(opt PublishOptions) *PublishHook {
	orDefault(&opt.Timeout, defaultPublishTimeout)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = publishConns, publishConns, publishConns
	p := &PublishHook{opt: opt, log: opt.Logger.With("component", "publish_hook"),
		client: &http.Client{Timeout: opt.Timeout, Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "xroom_publish_hook_total",
			Help: "Messages the publish hook was asked about, by outcome: stored, rewritten, refused, failed_refused, failed_allowed."}, []string{"outcome"}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "xroom_publish_hook_seconds",
			Help: "How long the publish hook took to answer.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	return p
}

// Collectors are the hook's metrics, for the caller to register.
func (p *PublishHook) Collectors() []prometheus.Collector {
	return []prometheus.Collector{p.outcomes, p.seconds}
}

// Refusal is the hook's refusal of a message: the sender is told Code and
// Message (an error frame, or a 403).
type Refusal struct{ Code, Message string }

func (r *Refusal) Error() string { return "refused by the publish hook: " + r.Code + ": " + r.Message }

// Refusal returns the code and message the sender is shown.
func (r *Refusal) Refusal() (code, message string) { return r.Code, r.Message }

// ErrHookFailed is the hook's error when it failed and PUBLISH_HOOK_ON_ERROR
// is refuse: the message is not stored.
var ErrHookFailed = errors.New("the publish hook failed")

var refusalCode = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Check asks the hook about a message and returns the text to store. The
// hook answers 200 {"message": "..."} (store that text; a 2xx without a
// message field stores it as sent) or 403 {"error": {"code", "message"}}
// (a *Refusal). Anything else, or no answer within the timeout, follows
// OnError: the text as sent, or an error wrapping ErrHookFailed.
func (p *PublishHook) Check(ctx context.Context, room, user, text, clientID string) (string, error) {
	start := time.Now()
	out, refused, err := p.ask(ctx, room, user, text, clientID)
	p.seconds.Observe(time.Since(start).Seconds())
	switch {
	case refused != nil:
		p.outcomes.WithLabelValues("refused").Inc()
		return "", refused
	case err == nil && out != text:
		p.outcomes.WithLabelValues("rewritten").Inc()
		return out, nil
	case err == nil:
		p.outcomes.WithLabelValues("stored").Inc()
		return out, nil
	case p.opt.OnError == Allow:
		p.outcomes.WithLabelValues("failed_allowed").Inc()
		p.log.Warn("the publish hook failed; storing the message as sent (PUBLISH_HOOK_ON_ERROR=allow)", "room", room, "err", err)
		return text, nil
	default:
		p.outcomes.WithLabelValues("failed_refused").Inc()
		p.log.Warn("the publish hook failed; the message is refused (PUBLISH_HOOK_ON_ERROR=refuse)", "room", room, "err", err)
		return "", fmt.Errorf("%w: %v", ErrHookFailed, err)
	}
}

func (p *PublishHook) ask(ctx context.Context, room, user, text, clientID string) (string, *Refusal, error) {
	body, _ := json.Marshal(struct {
		Room     string `json:"room"`
		User     string `json:"user"`
		Message  string `json:"message"`
		ClientID string `json:"client_id,omitempty"`
	}{room, user, text, clientID})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.opt.URL, bytes.NewReader(body))
	if err != nil {
		return "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "xroom-publish-hook")
	req.Header.Set(HeaderSignature, Sign([]byte(p.opt.Secret), body))
	resp, err := p.client.Do(req)
	if err != nil {
		return "", nil, fmt.Errorf("POST %s: %w", redactURL(p.opt.URL), err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, responseLimit))
	if err != nil {
		return "", nil, fmt.Errorf("POST %s: reading the answer: %w", redactURL(p.opt.URL), err)
	}
	switch {
	case resp.StatusCode == http.StatusForbidden:
		return "", refusalOf(answer), nil
	case resp.StatusCode/100 != 2:
		return "", nil, fmt.Errorf("POST %s: HTTP %d%s", redactURL(p.opt.URL), resp.StatusCode, quote(answer))
	}
	if len(bytes.TrimSpace(answer)) == 0 {
		return text, nil, nil
	}
	var a struct {
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(answer, &a); err != nil {
		return "", nil, fmt.Errorf("POST %s: HTTP %d with a body that is not JSON%s", redactURL(p.opt.URL), resp.StatusCode, quote(answer))
	}
	switch {
	case a.Message == nil:
		return text, nil, nil
	case *a.Message == "" || !utf8.ValidString(*a.Message):
		return "", nil, fmt.Errorf("POST %s: HTTP %d with an empty message", redactURL(p.opt.URL), resp.StatusCode)
	}
	return *a.Message, nil, nil
}

// refusalOf reads a 403's {"error": {"code", "message"}}, with fallbacks
// for what is missing or unfit to show.
func refusalOf(answer []byte) *Refusal {
	var a struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	_ = json.Unmarshal(answer, &a)
	r := &Refusal{Code: a.Error.Code, Message: a.Error.Message}
	if !refusalCode.MatchString(r.Code) {
		r.Code = "refused"
	}
	if len(r.Message) > maxRefusalMessage {
		r.Message = r.Message[:maxRefusalMessage]
		for !utf8.ValidString(r.Message) {
			r.Message = r.Message[:len(r.Message)-1]
		}
	}
	if r.Message == "" {
		r.Message = "the message was refused"
	}
	return r
}
