package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// checkReadsOnCluster runs read positions on a Redis Cluster whose rooms
// lie on every node: a position lives in its room's slot, a user's room
// index in the user's, and one unread request counts rooms on all nodes;
// a mark reaches the user's other connection through the room's events
// stream. lastIDs holds each room's newest message.
func checkReadsOnCluster(t *testing.T, cc *redis.ClusterClient, base string, rooms []string, lastIDs map[string]string) {
	t.Helper()
	ctx := t.Context()
	for _, room := range rooms {
		postRead(t, base, room, "carol", lastIDs[room])
		if got := cc.HGet(ctx, streams.Keys{Prefix: "chat"}.Reads(room), "carol").Val(); got != lastIDs[room] {
			t.Fatalf("%s: carol's position %q, want %s", room, got, lastIDs[room])
		}
	}
	// dave writes i+1 messages in room i: carol's unread.
	newest := map[string]string{}
	for i, room := range rooms {
		d := dial(t, base, room, "dave")
		for d.next().Type != "ready" {
		}
		for j := range i + 1 {
			ack, _ := d.sendAcked(fmt.Sprintf("unread %d", j), fmt.Sprintf("dave-%s-%d", room, j))
			newest[room] = ack.ID
		}
	}
	var u testkit.Unread
	getJSON(t, base+"/api/users/carol/unread", &u)
	if len(u.Rooms) != len(rooms) {
		t.Fatalf("carol's unread lists %d rooms, want %d: %+v", len(u.Rooms), len(rooms), u)
	}
	for k, r := range u.Rooms {
		i := indexOf(rooms, r.Room)
		if i < 0 || r.Unread != i+1 || r.More || r.LastRead != lastIDs[r.Room] || r.LastID != newest[r.Room] {
			t.Errorf("carol's unread %+v, want %d after %s up to %s", r, i+1, lastIDs[r.Room], newest[r.Room])
		}
		if k > 0 && idMs(u.Rooms[k-1].LastID) < idMs(r.LastID) {
			t.Errorf("%s listed after %s: not newest activity first", u.Rooms[k-1].Room, r.Room)
		}
	}
	if n := cc.ZCard(ctx, streams.Keys{Prefix: "chat"}.UserRooms("carol")).Val(); n != int64(len(rooms)) {
		t.Errorf("carol's room index holds %d rooms, want %d", n, len(rooms))
	}

	// Two of carol's connections in a room: a mark on one reaches the other.
	room := rooms[len(rooms)-1]
	phone, laptop := dial(t, base, room, "carol"), dial(t, base, room, "carol")
	for _, c := range []*wsClient{phone, laptop} {
		for c.next().Type != "ready" {
		}
	}
	phone.send(map[string]string{"type": "read", "id": newest[room]})
	if f := laptop.expect("read"); f.ID != newest[room] || f.Room != room {
		t.Fatalf("laptop got %+v, want read %s", f, newest[room])
	}
}

func postRead(t *testing.T, base, room, user, id string) {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(base+"/api/rooms/"+room+"/read?user="+user, "application/json", strings.NewReader(`{"id":"`+id+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST read %s %s: %d", room, id, resp.StatusCode)
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// idMs is the time part of a stream ID: rooms are ordered by it.
func idMs(id string) uint64 {
	ms, _ := strconv.ParseUint(strings.SplitN(id, "-", 2)[0], 10, 64)
	return ms
}
