package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// The bench's publish hook stores every message as sent, and counts.
func TestEchoHook(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(echoHook(&n))
	defer srv.Close()
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"room":"r","user":"u","message":"xb 1 2 3 ....","client_id":"c"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"message":"xb 1 2 3 ...."}` || n.Load() != 1 {
		t.Fatalf("%d %s, answered %d", resp.StatusCode, body, n.Load())
	}
	resp, err = http.Post(srv.URL, "application/json", strings.NewReader(`nope`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || n.Load() != 1 {
		t.Fatalf("not JSON: %d, answered %d", resp.StatusCode, n.Load())
	}
}
