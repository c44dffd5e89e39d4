package testkit

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
)

// subprotocol is handlers.Subprotocol, spelled here because testkit
// imports nothing of xroom: the tests inside handlers and streams use it
// too, and an import would be a cycle.
const subprotocol = "xroom.v1"

// ChatURL is the WebSocket address of room on the server at base (its
// http:// address), with query when it is not empty.
func ChatURL(base, room, query string) string {
	u := "ws" + strings.TrimPrefix(base, "http") + "/ws/chat/" + url.PathEscape(room) + "/"
	if query != "" {
		u += "?" + query
	}
	return u
}

// DialChat opens room's WebSocket on the server at base; xroom asks for
// the xroom.v1 subprotocol, else the connection gets the compatible
// dialect. When the server refuses the handshake, the error says its
// status and body, and resp is its answer.
func DialChat(base, room, query string, xroom bool, header http.Header) (conn *websocket.Conn, resp *http.Response, err error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	if xroom {
		d.Subprotocols = []string{subprotocol}
	}
	conn, resp, err = d.Dial(ChatURL(base, room, query), header)
	if err != nil && resp != nil {
		body, _ := io.ReadAll(resp.Body)
		err = &Refusal{Status: resp.StatusCode, Body: string(body), Err: err}
	}
	return conn, resp, err
}

// Refusal is a handshake the server answered with something else than
// 101 Switching Protocols.
type Refusal struct {
	Status int
	Body   string
	Err    error // the dialer's
}

func (r *Refusal) Error() string { return fmt.Sprintf("%v: %d %s", r.Err, r.Status, r.Body) }

func (r *Refusal) Unwrap() error { return r.Err }
