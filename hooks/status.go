package hooks

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xroom/xroom/streams"
)

// stats counts what delivery did, for metrics and the status.
type stats struct {
	sent    atomic.Int64 // messages the webhook took
	failed  atomic.Int64 // requests that failed (timeout, non-2xx)
	retried atomic.Int64 // batches scheduled to be sent again
	dead    atomic.Int64 // messages moved to the dead letters
	claimed atomic.Int64 // batches taken over from a dead instance
}

// pending is what this instance holds now: messages read and not yet
// acknowledged, and the oldest of them.
func (w *Webhooks) pending() (n int, oldest streams.ID) {
	for _, r := range w.held() {
		b := r.held()
		if b == nil || len(b.Entries) == 0 {
			continue
		}
		n += len(b.Entries)
		if first := b.Entries[0].ID; oldest.IsZero() || first.Less(oldest) {
			oldest = first
		}
	}
	return n, oldest
}

// age is how long ago id was stored (0 for Zero).
func age(id streams.ID) time.Duration {
	if id.IsZero() {
		return 0
	}
	return max(time.Since(time.UnixMilli(int64(id.Ms))), 0)
}

// Collectors are the webhook metrics, for the caller to register.
func (w *Webhooks) Collectors() []prometheus.Collector {
	counter := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v.Load()) })
	}
	return []prometheus.Collector{
		counter("xroom_webhook_messages_sent_total", "Messages the webhook acknowledged (2xx).", &w.stats.sent),
		counter("xroom_webhook_requests_failed_total", "Webhook requests that failed: a timeout, no connection, or a status other than 2xx.", &w.stats.failed),
		counter("xroom_webhook_retries_total", "Batches scheduled to be sent again after a failure.", &w.stats.retried),
		counter("xroom_webhook_messages_dead_total", "Messages moved to a room's dead letters after WEBHOOK_MAX_ATTEMPTS failures.", &w.stats.dead),
		counter("xroom_webhook_batches_claimed_total", "Batches taken over from an instance that stopped renewing them (WEBHOOK_CLAIM_AFTER).", &w.stats.claimed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xroom_webhook_pending_messages",
			Help: "Messages this instance has read for the webhook and not yet had acknowledged."},
			func() float64 { n, _ := w.pending(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "xroom_webhook_oldest_pending_seconds",
			Help: "How long ago the oldest message this instance holds for the webhook was stored; 0 when it holds none."},
			func() float64 { _, oldest := w.pending(); return age(oldest).Seconds() }),
	}
}

// Status is webhook delivery as GET /api/hooks shows it.
type Status struct {
	Enabled  bool   `json:"enabled"`
	URL      string `json:"url"` // without its password or query
	Consumer string `json:"consumer"`
	Group    string `json:"group"`
	Rooms    string `json:"rooms_found_by"` // notify, or poll without keyspace notifications
	// Pending counts the messages this instance holds (read, not yet
	// acknowledged), and OldestPending is the oldest of them.
	Pending          int        `json:"pending"`
	OldestPendingID  string     `json:"oldest_pending_id,omitempty"`
	OldestPendingAge float64    `json:"oldest_pending_seconds"`
	Retrying         int        `json:"rooms_retrying"` // rooms waiting to send a failed batch again
	Sent             int64      `json:"sent"`
	Failed           int64      `json:"failed"`
	Retried          int64      `json:"retried"`
	Dead             int64      `json:"dead_lettered"`
	LastError        *failure   `json:"last_error"`
	Room             *RoomState `json:"room,omitempty"`
}

// RoomState is one room's delivery in Redis, across instances.
type RoomState struct {
	Room             string           `json:"room"`
	Group            bool             `json:"group"` // false: no message of the room has been looked at yet
	Pending          int64            `json:"pending"`
	OldestPendingID  string           `json:"oldest_pending_id,omitempty"`
	OldestPendingAge float64          `json:"oldest_pending_seconds"`
	Holders          map[string]int64 `json:"holders,omitempty"`
	Lag              int64            `json:"unread"` // -1 when Redis cannot tell
	LastDeliveredID  string           `json:"last_read_id,omitempty"`
	DeadLetters      int64            `json:"dead_letters"`
}

// Status reports this instance's delivery and, when room is not "", that
// room's in Redis.
func (w *Webhooks) Status(ctx context.Context, room string) (any, error) {
	n, oldest := w.pending()
	st := Status{Enabled: true, URL: redactURL(w.opt.URL), Consumer: w.opt.Consumer, Group: streams.HookGroupName,
		Pending: n, OldestPendingAge: age(oldest).Seconds(),
		Sent: w.stats.sent.Load(), Failed: w.stats.failed.Load(), Retried: w.stats.retried.Load(), Dead: w.stats.dead.Load(),
		LastError: w.lastErr.Load()}
	if !oldest.IsZero() {
		st.OldestPendingID = oldest.String()
	}
	if wa := w.watch.Load(); wa != nil {
		st.Rooms = wa.Mode().String()
	}
	w.mu.Lock()
	for _, r := range w.rooms {
		if r.phase == waiting && r.held() != nil {
			st.Retrying++
		}
	}
	w.mu.Unlock()
	if room == "" {
		return st, nil
	}
	rs, err := w.group.Status(ctx, room)
	if err != nil {
		return nil, err
	}
	st.Room = &RoomState{Room: room, Group: rs.Group, Pending: rs.Pending, OldestPendingAge: age(rs.OldestPending).Seconds(),
		Holders: rs.Holders, Lag: rs.Lag, DeadLetters: rs.Dead}
	if !rs.OldestPending.IsZero() {
		st.Room.OldestPendingID = rs.OldestPending.String()
	}
	if !rs.LastDelivered.IsZero() {
		st.Room.LastDeliveredID = rs.LastDelivered.String()
	}
	return st, nil
}
