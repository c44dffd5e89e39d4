package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// hookServer is `bench hook`: a publish hook (PUBLISH_HOOK_URL) that
// answers at once, storing every message as sent, so that a run against a
// server using it measures what asking a hook costs xroom, not what the
// hook's own work costs. It serves until SIGINT or SIGTERM, then prints how
// many requests it answered.
func hookServer(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench hook", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to serve the publish hook on")
	if err := fs.Parse(args); err != nil {
		return exitSetup
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "bench hook:", err)
		return exitSetup
	}
	var answered atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: echoHook(&answered)}
	fmt.Fprintf(stdout, "publish hook serving at http://%s/\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "bench hook:", err)
		return exitSetup
	}
	fmt.Fprintf(stdout, "publish hook answered %d requests\n", answered.Load())
	return exitOK
}

// echoHook answers each publish hook request with its own message: stored
// as sent. answered counts the requests it answered so.
func echoHook(answered *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			Message string `json:"message"`
		}
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"code":"bad_request","message":"not JSON"}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(m)
		answered.Add(1)
	})
}
