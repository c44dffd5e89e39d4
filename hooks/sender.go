// Package hooks connects xroom to the application beside it: webhooks
// that hand it every stored message at least once, in order per room
// (Webhooks), and a publish hook it asks before a message is stored
// (PublishHook). Redis is reached through streams only.
package hooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/xroom/xroom/streams"
)

// Header names of a webhook request.
const (
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body
	// keyed with WEBHOOK_SECRET.
	HeaderSignature = "X-Xroom-Signature"
	// HeaderDelivery names the batch, the same on each retry of it.
	HeaderDelivery = "X-Xroom-Delivery"
	// HeaderAttempt counts the tries of that batch, from 1.
	HeaderAttempt = "X-Xroom-Attempt"
)

const (
	// responseLimit is how much of a webhook's answer is read: its status
	// is what counts, and an error quotes only the start of its body.
	responseLimit = 64 << 10
	// quoteLimit is how much of a failed answer's body an error quotes.
	quoteLimit = 200
)

// Message is one stored message as the webhook gets it.
type Message struct {
	Room     string `json:"room"`
	ID       string `json:"id"` // the stream ID: a receiver dedups by it
	User     string `json:"user"`
	Message  string `json:"message"`
	TS       int64  `json:"ts"` // Unix ms, from the ID
	ClientID string `json:"client_id,omitempty"`
}

// MessageOf is e of room as the webhook gets it.
func MessageOf(room string, e *streams.Entry) Message {
	return Message{Room: room, ID: e.ID.String(), User: e.User, Message: e.Message, TS: int64(e.ID.Ms), ClientID: e.ClientID}
}

// Sender posts signed batches of messages to the webhook.
type Sender struct {
	url    string
	secret []byte
	client *http.Client
}

// NewSender posts to url, signing with secret, each request bounded by
// timeout; conns is how many requests may be in flight at once.
func NewSender(url, secret string, timeout time.Duration, conns int) *Sender {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(conns, 2)
	return &Sender{url: url, secret: []byte(secret), client: &http.Client{
		Timeout:   timeout,
		Transport: tr,
		// A redirect is a failure to deliver: following a POST's 302 would
		// turn it into a GET without the messages.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// SendError is a failed delivery: the webhook's status (0 when it gave
// none: a timeout, a refused connection) and what went wrong.
type SendError struct {
	Status int
	Err    error
}

func (e *SendError) Error() string { return e.Err.Error() }
func (e *SendError) Unwrap() error { return e.Err }

// Send posts msgs as one batch: {"messages": [...]}. nil means the webhook
// answered 2xx and took them all; otherwise the error is a *SendError.
func (s *Sender) Send(ctx context.Context, delivery string, attempt int, msgs []Message) error {
	body, err := json.Marshal(struct {
		Messages []Message `json:"messages"`
	}{msgs})
	if err != nil {
		return &SendError{Err: fmt.Errorf("encode the batch: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return &SendError{Err: fmt.Errorf("webhook request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "xroom-webhook")
	req.Header.Set(HeaderSignature, Sign(s.secret, body))
	req.Header.Set(HeaderDelivery, delivery)
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))
	resp, err := s.client.Do(req)
	if err != nil {
		return &SendError{Err: fmt.Errorf("POST %s: %w", redactURL(s.url), err)}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, responseLimit))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return &SendError{Status: resp.StatusCode, Err: fmt.Errorf("POST %s: HTTP %d%s", redactURL(s.url), resp.StatusCode, quote(answer))}
}

// Sign is the X-Xroom-Signature of body: "sha256=" and the hex HMAC-SHA256
// of the body keyed with secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// newDeliveryID names a batch: random, so that two instances never reuse one.
func newDeliveryID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// quote is the start of a failed answer's body, for an error message.
func quote(body []byte) string {
	s := strings.TrimSpace(string(body))
	if s == "" {
		return ""
	}
	if len(s) > quoteLimit {
		s = s[:quoteLimit]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		s += "…"
	}
	return ": " + s
}

// redactURL hides a URL's password and query (where tokens often live)
// from logs and status.
func redactURL(raw string) string {
	i := strings.Index(raw, "://")
	if i < 0 {
		return raw
	}
	scheme, rest := raw[:i+3], raw[i+3:]
	if at := strings.IndexByte(rest, '@'); at >= 0 && (strings.IndexByte(rest, '/') < 0 || at < strings.IndexByte(rest, '/')) {
		rest = "xxxxx@" + rest[at+1:]
	}
	if q := strings.IndexByte(rest, '?'); q >= 0 {
		rest = rest[:q] + "?xxxxx"
	}
	return scheme + rest
}

// errStatus is a failed delivery's HTTP status, 0 when it gave none.
func errStatus(err error) int {
	var se *SendError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}
