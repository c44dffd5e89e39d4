package handlers_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawWS is a WebSocket client that writes hand-built frames and reads the
// server's frames byte for byte, checking what a library would hide.
type rawWS struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// Frame bits and opcodes, as a client builds them.
const (
	fin      = 0x80
	rsv1     = 0x40
	rsv2     = 0x20
	rsv3     = 0x10
	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// sampleKey and sampleAccept are RFC 6455's handshake example.
const (
	sampleKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	sampleAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// rawDial opens a WebSocket to room in the compatible dialect: on a new
// room the server sends nothing until the client does.
func (ts *testServer) rawDial(t *testing.T, room string) *rawWS {
	t.Helper()
	conn, resp := upgradeConn(t, ts, "/ws/chat/"+room+"/", "", 0)
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != sampleAccept {
		t.Fatalf("Sec-WebSocket-Accept %q, want %q", got, sampleAccept)
	}
	return &rawWS{t: t, conn: conn, br: bufio.NewReader(conn)}
}

// upgradeConn does the WebSocket handshake (RFC 6455's sample key, the
// subprotocol if any) on a plain TCP connection and returns it, with
// nothing after the response's headers read.
func upgradeConn(t *testing.T, ts *testServer, target, protocol string, rcvBuf int) (net.Conn, *http.Response) {
	t.Helper()
	addr := strings.TrimPrefix(ts.base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if rcvBuf > 0 {
		_ = conn.(*net.TCPConn).SetReadBuffer(rcvBuf)
	}
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + sampleKey + "\r\nSec-WebSocket-Version: 13\r\n"
	if protocol != "" {
		req += "Sec-WebSocket-Protocol: " + protocol + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Read the response headers byte by byte, so nothing after them is consumed.
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return conn, resp
}

// clientFrame builds a masked frame: b0 is FIN, RSV and opcode.
func clientFrame(b0 byte, payload []byte) []byte {
	return buildFrame(b0, true, uint64(len(payload)), payload)
}

// buildFrame builds a frame whose header says length n, with payload
// (which may be shorter), masked or not.
func buildFrame(b0 byte, masked bool, n uint64, payload []byte) []byte {
	f := []byte{b0, 0}
	switch {
	case n < 126:
		f[1] = byte(n)
	case n <= 0xffff:
		f[1] = 126
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f[1] = 127
		f = binary.BigEndian.AppendUint64(f, n)
	}
	if !masked {
		return append(f, payload...)
	}
	f[1] |= 0x80
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}

// closePayload is a close frame's payload: the code and a reason.
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func (w *rawWS) write(frames ...[]byte) {
	w.t.Helper()
	_ = w.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	for _, f := range frames {
		if _, err := w.conn.Write(f); err != nil {
			w.t.Fatalf("write: %v", err)
		}
	}
}

// serverFrame is a frame as the server sent it.
type serverFrame struct {
	op      byte
	payload []byte
}

func (f serverFrame) String() string {
	if f.op == opClose && len(f.payload) >= 2 {
		return fmt.Sprintf("close %d %q", binary.BigEndian.Uint16(f.payload), f.payload[2:])
	}
	return fmt.Sprintf("op %#x %q", f.op, f.payload)
}

// read reads one server frame and checks what RFC 6455 asks of it: final
// (xroom never fragments), no RSV bits, not masked.
func (w *rawWS) read() (serverFrame, error) {
	w.t.Helper()
	_ = w.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [10]byte
	if _, err := io.ReadFull(w.br, h[:2]); err != nil {
		return serverFrame{}, err
	}
	if h[0]&0x70 != 0 || h[0]&fin == 0 || h[1]&0x80 != 0 {
		w.t.Fatalf("server frame header %#x %#x: want FIN, no RSV bits, no mask", h[0], h[1])
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(w.br, h[2:4]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		if _, err := io.ReadFull(w.br, h[2:10]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(h[2:10])
	}
	f := serverFrame{op: h[0] & 0x0f, payload: make([]byte, n)}
	_, err := io.ReadFull(w.br, f.payload)
	return f, err
}

// closeAndEnd reads the server's close frame and checks that it is the
// last frame and that the server then closes the TCP connection.
func (w *rawWS) closeAndEnd() serverFrame {
	w.t.Helper()
	f, err := w.read()
	if err != nil {
		w.t.Fatalf("want a close frame: %v", err)
	}
	if f.op != opClose {
		w.t.Fatalf("got %v, want a close frame", f)
	}
	if extra, err := w.read(); err == nil {
		w.t.Fatalf("after the close frame, another frame: %v", extra)
	} else if !errors.Is(err, io.EOF) {
		w.t.Fatalf("after the close frame: %v, want the server to close the connection (EOF)", err)
	}
	return f
}
