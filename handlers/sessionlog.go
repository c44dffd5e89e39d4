package handlers

import (
	"context"
	"log/slog"
)

// sessionLog logs a connection's lines with its room, user and remote
// address. The attributes are attached when a line is logged, not
// beforehand: most connections never log, and a prepared slog.Logger
// (With) would cost every idle connection a few hundred bytes.
type sessionLog struct {
	base               *slog.Logger
	room, user, remote string
}

func (l sessionLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args) }
func (l sessionLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args) }
func (l sessionLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args) }

func (l sessionLog) log(level slog.Level, msg string, args []any) {
	if l.base == nil || !l.base.Enabled(context.Background(), level) {
		return
	}
	l.base.Log(context.Background(), level, msg, append([]any{"room", l.room, "user", l.user, "remote", l.remote}, args...)...)
}
