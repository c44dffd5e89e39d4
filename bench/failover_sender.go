package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
)

// A failover sender is a resilient client: every send has a client_id; a
// send refused with unavailable is sent again with the same client_id after
// foRetryDelay; when the connection ends (1013, a reset) it reconnects with
// since= the newest ID it got and sends again every send still unanswered.
// It keeps at most window sends unanswered, at most rate new sends a second.

const (
	foRetryDelay     = 100 * time.Millisecond // a client's pause before resending a refused send
	foReconnectDelay = 200 * time.Millisecond // and before dialling again
	foReadyWait      = 10 * time.Second       // a join slower than this is retried
	foIdleTick       = 10 * time.Millisecond  // the writer's longest sleep
)

type foSend struct {
	sentAt  int64 // first attempt
	retryAt int64 // 0: in flight; else when to send it again
}

type foSender struct {
	num    int
	run    *run
	room   string
	rate   float64 // new sends a second
	window int
	size   int
	signal chan struct{}

	mu         sync.Mutex
	ws         *websocket.Conn // nil between connections
	pending    map[int64]*foSend
	nextSeq    int64
	acks       []foAck
	ackLat     []int64
	refusedAt  []int64
	codes      map[string]int64
	gaps       map[string]int64
	attempts   int64
	reconnects int64
	lastID     string // newest message ID received, for since=
	lastMsgAt  int64
	silence    int64 // longest time without a message while sending
	stopped    bool  // no new sends
}

func newFoSender(num int, r *run, room string, rate float64, window, size int) *foSender {
	return &foSender{num: num, run: r, room: room, rate: rate, window: window, size: size, signal: make(chan struct{}, 1),
		pending: map[int64]*foSend{}, codes: map[string]int64{}, gaps: map[string]int64{}}
}

func (s *foSender) notify() {
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// connect dials and waits for ready; the reader runs until the connection
// ends, then clears s.ws.
func (s *foSender) connect(ctx context.Context) error {
	q := url.Values{"user": {"fo" + strconv.Itoa(s.num)}}
	s.mu.Lock()
	if s.lastID != "" {
		q.Set("since", s.lastID)
	}
	s.mu.Unlock()
	dctx, cancel := context.WithTimeout(ctx, foReadyWait)
	defer cancel()
	ws, _, err := dialer.DialContext(dctx, wsURL(s.run.serverFor(s.num), s.room, q), nil)
	if err != nil {
		return err
	}
	ready := make(chan struct{})
	go s.read(ws, ready)
	select {
	case <-ready:
	case <-dctx.Done():
		ws.Close()
		return dctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ws != ws { // ended before ready
		return errConnEnded
	}
	return nil
}

var errConnEnded = errors.New("connection ended before ready")

// read handles every frame of ws until it ends.
func (s *foSender) read(ws *websocket.Conn, ready chan struct{}) {
	isReady := false
	defer func() {
		s.mu.Lock()
		if s.ws == ws {
			s.ws = nil
		}
		s.mu.Unlock()
		if !isReady {
			close(ready)
		}
		ws.Close()
		s.notify()
	}()
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		now := mono()
		f, err := parseServerFrame(b)
		if err != nil {
			continue
		}
		s.mu.Lock()
		switch f.Kind {
		case kindMessage:
			s.lastID = f.ID.String()
			if !s.stopped && s.lastMsgAt != 0 {
				s.silence = max(s.silence, now-s.lastMsgAt)
			}
			s.lastMsgAt = now
		case kindReady:
			if !isReady {
				isReady = true
				s.ws = ws
				if f.LastID != "" && s.lastID == "" {
					s.lastID = f.LastID
				}
				close(ready)
			}
		case kindAck:
			s.ack(b, f, now)
		case kindError:
			s.refuse(f, now)
		case kindGap:
			s.gaps[f.Reason]++
		}
		s.mu.Unlock()
		if f.Kind == kindAck || f.Kind == kindError { // the writer may send again
			s.notify()
		}
	}
}

// ack records the first ack of a send (s.mu held).
func (s *foSender) ack(b []byte, f serverFrame, now int64) {
	pub, seq, ok := parseClientID(s.run.id, f.ClientID)
	p := s.pending[seq]
	if !ok || pub != s.num || p == nil {
		return // a second ack of a resent send
	}
	var raw struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(b, &raw)
	id, err := parseStreamID([]byte(raw.ID))
	if err != nil {
		s.codes["bad_ack"]++
		return
	}
	delete(s.pending, seq)
	s.acks = append(s.acks, foAck{ClientID: f.ClientID, ID: id, At: now})
	s.ackLat = append(s.ackLat, now-p.sentAt)
}

// refuse schedules a refused send again (s.mu held): unavailable is what
// a failover answers; anything else is counted and given up on.
func (s *foSender) refuse(f serverFrame, now int64) {
	s.codes[f.Code]++
	pub, seq, ok := parseClientID(s.run.id, f.ClientID)
	p := s.pending[seq]
	if !ok || pub != s.num || p == nil {
		return // a join's unavailable, before close 1013
	}
	if f.Code != "unavailable" {
		delete(s.pending, seq)
		return
	}
	s.refusedAt = append(s.refusedAt, now)
	p.retryAt = now + int64(foRetryDelay)
}

// loop sends until stop is closed and then until every send is answered,
// or ctx ends. The connection is open (connect) when it starts.
func (s *foSender) loop(ctx context.Context, stop <-chan struct{}) {
	interval := int64(float64(time.Second) / s.rate)
	next := mono()
	buf := make([]byte, 0, s.size+128)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for ctx.Err() == nil {
		select {
		case <-stop:
			stop = nil // closed: no more new sends, and no more waking for it
			s.mu.Lock()
			s.stopped = true
			if s.lastMsgAt != 0 {
				s.silence = max(s.silence, mono()-s.lastMsgAt)
			}
			s.mu.Unlock()
		default:
		}
		s.mu.Lock()
		ws, stopped, left := s.ws, s.stopped, len(s.pending)
		s.mu.Unlock()
		if stopped && left == 0 {
			return
		}
		if ws == nil {
			if err := s.connect(ctx); err != nil {
				sleepCtx(ctx, foReconnectDelay)
				continue
			}
			s.mu.Lock()
			s.reconnects++
			ws = s.ws
			for _, p := range s.pending { // unanswered on the old connection: again
				p.retryAt = 1
			}
			s.mu.Unlock()
			if ws == nil {
				continue
			}
		}
		now := mono()
		var due []int64
		s.mu.Lock()
		if !s.stopped && now >= next && len(s.pending) < s.window {
			s.pending[s.nextSeq] = &foSend{sentAt: now}
			due = append(due, s.nextSeq)
			s.nextSeq++
			if now-next > interval { // late: carry on from now, no burst to catch up
				next = now
			}
			next += interval
		}
		wake := now + int64(foIdleTick) // an answer wakes it sooner (signal)
		if !s.stopped && len(s.pending) < s.window {
			wake = next
		}
		for seq, p := range s.pending {
			if p.retryAt != 0 && p.retryAt <= now {
				p.retryAt = 0
				due = append(due, seq)
			} else if p.retryAt != 0 {
				wake = min(wake, p.retryAt)
			}
		}
		s.attempts += int64(len(due))
		s.mu.Unlock()
		for _, seq := range due {
			s.mu.Lock()
			sent := s.pending[seq]
			s.mu.Unlock()
			if sent == nil {
				continue
			}
			buf = appendSendFrame(buf[:0], payload{Run: s.run.id, Pub: s.num, Seq: seq, Sent: sent.sentAt}, s.size)
			_ = ws.SetWriteDeadline(time.Now().Add(sendTimeout))
			if err := ws.WriteMessage(websocket.TextMessage, buf); err != nil {
				ws.Close() // the reader ends and clears s.ws; unanswered sends go again
				break
			}
		}
		timer.Reset(time.Duration(min(max(wake-mono(), 0), int64(foIdleTick))))
		select {
		case <-timer.C:
		case <-s.signal:
		case <-stop:
		case <-ctx.Done():
		}
	}
}

// close ends the current connection, if any.
func (s *foSender) close() {
	s.mu.Lock()
	ws := s.ws
	s.mu.Unlock()
	if ws != nil {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		ws.Close()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
