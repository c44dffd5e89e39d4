package main

import (
	"net/url"
	"time"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// hooksConfig is the webhooks' and the publish hook's part of the
// configuration (README: Hooks), in the hooks package's own options: app
// adds the logger and starts them. The publish hook signs with
// WEBHOOK_SECRET, the webhooks' secret.
type hooksConfig struct {
	Webhook hooks.WebhookOptions // URL "": no webhooks
	Publish hooks.PublishOptions // URL "": no publish hook
}

const (
	// minClaimAfter: a batch is renewed three times per claim time, and a
	// renewal is a Redis round trip that a busy instance may be late with.
	minClaimAfter = time.Second
	// maxPublishTimeout: every message waits for the publish hook, and a
	// sender waits for its ack.
	maxPublishTimeout = time.Minute
	// minHookSecretBytes: a shorter HMAC key can be guessed.
	minHookSecretBytes = 16
)

// hooks reads the hooks' variables. A URL that is not http(s), a duration
// out of range, an unknown choice: an error naming the variable.
func (r *envReader) hooks() hooksConfig {
	secret := r.secret("WEBHOOK_SECRET", minHookSecretBytes) // HMAC key of X-Xroom-Signature; never logged
	h := hooksConfig{
		Webhook: hooks.WebhookOptions{
			URL:         r.url("WEBHOOK_URL"),
			Secret:      secret,
			ClaimAfter:  r.duration("WEBHOOK_CLAIM_AFTER", 30*time.Second, minClaimAfter),
			Concurrency: int(r.integer("WEBHOOK_CONCURRENCY", 16, 1, 1024)),
			MaxAttempts: int(r.integer("WEBHOOK_MAX_ATTEMPTS", 10, 1, 1000)),
			Batch:       int(r.integer("WEBHOOK_BATCH", 100, 1, 1000)),
			Timeout:     r.duration("WEBHOOK_TIMEOUT", 10*time.Second, 100*time.Millisecond),
			Backoff:     r.duration("WEBHOOK_BACKOFF", time.Second, 10*time.Millisecond),
		},
		Publish: hooks.PublishOptions{
			URL:     r.url("PUBLISH_HOOK_URL"),
			Secret:  secret,
			Timeout: r.duration("PUBLISH_HOOK_TIMEOUT", 2*time.Second, time.Millisecond),
		},
	}
	switch from := r.str("WEBHOOK_FROM", "enabled"); from {
	case "enabled":
		h.Webhook.From = streams.HookFromEnabled
	case "start":
		h.Webhook.From = streams.HookFromStart
	default:
		r.fail("WEBHOOK_FROM", from, "want enabled (messages stored since webhooks were first turned on) or start (every message in history)")
	}
	onError, err := hooks.ParseOnError(r.str("PUBLISH_HOOK_ON_ERROR", "refuse"))
	if err != nil {
		r.fail("PUBLISH_HOOK_ON_ERROR", r.str("PUBLISH_HOOK_ON_ERROR", ""), err.Error())
	}
	h.Publish.OnError = onError
	if h.Publish.Timeout > maxPublishTimeout {
		r.fail("PUBLISH_HOOK_TIMEOUT", r.str("PUBLISH_HOOK_TIMEOUT", ""), "want at most "+maxPublishTimeout.String()+": every message waits for the hook")
	}
	return h
}

// url reads an http:// or https:// URL with a host ("" when unset).
func (r *envReader) url(name string) string {
	raw := r.str(name, "")
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		r.fail(name, hidePasswords(raw, raw), "want an http:// or https:// URL, such as https://app.example.com/xroom/hook")
		return ""
	}
	return raw
}
