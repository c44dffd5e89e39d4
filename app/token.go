package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/xroom/xroom/handlers"
)

// maxTokenTTL keeps development tokens short-lived: a leaked one expires.
const maxTokenTTL = 30 * 24 * time.Hour

// tokenCommand is `xroom token`: it prints a token signed with AUTH_SECRET
// (from the environment or .env) for development and scripts. It returns
// the exit status.
func tokenCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("xroom token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "user name the token is for (required): 1 to 32 printable characters")
	rooms := fs.String("rooms", "", "rooms it may join: comma-separated globs such as 'lobby,team-*' (default: every room)")
	ttl := fs.Duration("ttl", time.Hour, "how long it is valid, at most 720h")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: xroom token -sub NAME [-rooms 'lobby,team-*'] [-ttl 1h]")
		fmt.Fprintln(stderr, "Prints an HS256 token signed with AUTH_SECRET (environment or .env). Pass it as ?token= on the WebSocket URL or as Authorization: Bearer on API reads.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	tok, err := mintFromEnv(getenv, *sub, *rooms, *ttl, fs.NArg())
	if err != nil {
		fmt.Fprintln(stderr, "xroom token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func mintFromEnv(getenv func(string) string, sub, rooms string, ttl time.Duration, extra int) (string, error) {
	if extra > 0 {
		return "", errors.New("unexpected arguments; see -h")
	}
	if sub == "" {
		return "", errors.New("-sub is required: the user name the token is for")
	}
	if ttl <= 0 || ttl > maxTokenTTL {
		return "", fmt.Errorf("-ttl %s: want more than 0 and at most %s", ttl, maxTokenTTL)
	}
	getenv, err := withDotEnv(getenv)
	if err != nil {
		return "", err
	}
	r := &envReader{getenv: getenv}
	secret := r.secret("AUTH_SECRET", handlers.MinSecretBytes)
	if r.err != nil {
		return "", r.err
	}
	if secret == "" {
		return "", errors.New("AUTH_SECRET is not set (environment or .env): the server and this command must share it")
	}
	var patterns []string
	if rooms != "" {
		patterns = handlers.ParseRoomPatterns(rooms)
	}
	return handlers.MintToken([]byte(secret), sub, patterns, ttl, time.Now())
}
