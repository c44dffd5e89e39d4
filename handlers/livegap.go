package handlers

// Gaps found after the join, announced in the stream of entries: a
// failover that rolled back entries the connection was sent, or a
// catch-up read that skipped trimmed entries (streams/livegap.go). The
// join's own gaps come from its plan (join.go).

// announceGap tells the client, before the entries of the same pass, that
// a failover rolled back entries it was sent, or that a catch-up read
// skipped entries trimmed away while it was behind. The
// compatible dialect is not told (sendGap): its frames all carry a message.
func (f *feed) announceGap() error {
	if last, ok := f.sub.RolledBack(); ok {
		// A failover lost entries this connection was sent: say so before
		// anything newer (the entries that follow come after last).
		f.log.Warn("the room was rolled back under the connection", "last_kept", last.String())
		return f.sendGap("rolled_back", last)
	}
	oldest, ok := f.sub.Gap()
	if !ok {
		return nil
	}
	f.log.Info("connection fell behind the room's retained history", "oldest", oldest.String(), "cursor", f.cursor.String())
	return f.sendGap("trimmed", oldest)
}
