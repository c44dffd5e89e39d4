package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/streams"
)

func TestRunOnRedisCluster(t *testing.T) {
	cluster := redistest.StartCluster(t, 3)
	cc := cluster.Client(t)
	ctx := t.Context()

	// Ten rooms spread over all three masters: at most four on one node.
	perNode := map[string][]string{}
	var rooms []string
	for i := 0; len(rooms) < 10; i++ {
		room := fmt.Sprintf("room-%d", i)
		node, err := cc.MasterForKey(ctx, streams.Keys{Prefix: "chat"}.Messages(room))
		if err != nil {
			t.Fatal(err)
		}
		addr := node.Options().Addr
		if len(perNode[addr]) < 4 {
			perNode[addr] = append(perNode[addr], room)
			rooms = append(rooms, room)
		}
	}
	if len(perNode) != 3 {
		t.Fatalf("rooms cover %d nodes, want 3: %v", len(perNode), perNode)
	}

	var urls []string
	for _, a := range cluster.Addrs {
		urls = append(urls, "redis://"+a)
	}
	r := startRun(t, baseEnv(t, map[string]string{"REDIS_URL": strings.Join(urls, ",")}))

	lastIDs := map[string]string{}
	for i, room := range rooms {
		a := dial(t, r.base, room, "alice")
		b := dial(t, r.base, room, "bob")
		a.expect("ready")
		b.expect("ready")
		text := fmt.Sprintf("hello %s", room)
		cid := fmt.Sprintf("cid-%d", i)
		ack, _ := a.sendAcked(text, cid)
		if f := b.expect("message"); f.ID != ack.ID || f.Message != text || f.User != "alice" || f.Room != room {
			t.Fatalf("%s: bob got %+v, want alice's %s", room, f, ack.ID)
		}
		// A resend of the same client_id: acknowledged with the first ID, not stored again.
		a.send(map[string]string{"type": "message", "message": text, "client_id": cid})
		dup := a.expect("ack")
		if dup.ID != ack.ID || !dup.Duplicate || dup.ClientID != cid {
			t.Fatalf("%s: resend acked %+v, want %s duplicate", room, dup, ack.ID)
		}
		// A second, different message proves nothing was stored in between:
		// bob's next message is this one.
		ack2, _ := a.sendAcked(text+" again", cid+"-2")
		if f := b.expect("message"); f.ID != ack2.ID {
			t.Fatalf("%s: bob's next message is %+v, want %s (the resend must not be delivered)", room, f, ack2.ID)
		}
		key := streams.Keys{Prefix: "chat"}.Messages(room)
		if n, err := cc.XLen(ctx, key).Result(); err != nil || n != 2 {
			t.Fatalf("%s: XLEN = %d %v, want 2", key, n, err)
		}
		lastIDs[room] = ack2.ID
	}

	var list roomsList
	getJSON(t, r.base+"/api/rooms", &list)
	got := map[string]string{}
	for _, x := range list.Rooms {
		got[x.Room] = x.LastID
	}
	if len(got) != len(rooms) {
		names := make([]string, 0, len(got))
		for n := range got {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Fatalf("/api/rooms lists %v, want all of %v", names, rooms)
	}
	for room, id := range lastIDs {
		if got[room] != id {
			t.Errorf("/api/rooms: %s last_id %q, want %s", room, got[room], id)
		}
	}
	// Newest first: the last room written is listed first.
	if list.Rooms[0].Room != rooms[len(rooms)-1] {
		t.Errorf("/api/rooms starts with %s, want the most recent %s", list.Rooms[0].Room, rooms[len(rooms)-1])
	}
	// Presence lives in each room's slot: the scripts, the events stream
	// (read in the tail's XREAD with the messages), and the cleanup on stop.
	for _, room := range rooms {
		var p struct{ Members []struct{ User string } }
		getJSON(t, r.base+"/api/rooms/"+room+"/presence", &p)
		if len(p.Members) != 2 || p.Members[0].User != "alice" || p.Members[1].User != "bob" {
			t.Fatalf("%s: presence %+v, want alice and bob", room, p)
		}
		if n := cc.XLen(ctx, streams.Keys{Prefix: "chat"}.Events(room)).Val(); n < 2 {
			t.Fatalf("%s: %d events, want the joins", room, n)
		}
	}
	checkReadsOnCluster(t, cc, r.base, rooms, lastIDs) // reads_cluster_test.go
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	for _, room := range rooms {
		if n := cc.ZCard(ctx, streams.Keys{Prefix: "chat"}.Presence(room)).Val(); n != 0 {
			t.Errorf("%s: %d members left after a graceful stop", room, n)
		}
	}
}
