package wiring

import (
	"log/slog"

	"github.com/xroom/xroom/hooks"
	"github.com/xroom/xroom/streams"
)

// startHooks starts webhook delivery and makes the publish hook, each when
// its URL is set (nil otherwise).
func startHooks(hub *streams.Hub, webhook hooks.WebhookOptions, publish hooks.PublishOptions, log *slog.Logger) (*hooks.Webhooks, *hooks.PublishHook) {
	if webhook.URL != "" && webhook.Secret == "" || publish.URL != "" && publish.Secret == "" {
		log.Warn("WEBHOOK_SECRET is empty: hook requests are signed with an empty key, which anyone can forge")
	}
	var w *hooks.Webhooks
	if webhook.URL != "" {
		w = hooks.StartWebhooks(hub, webhook)
	}
	var p *hooks.PublishHook
	if publish.URL != "" {
		p = hooks.NewPublishHook(publish)
		log.Info("every message is checked by the publish hook before it is stored", "timeout", publish.Timeout)
	}
	return w, p
}
