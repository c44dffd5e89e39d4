package hooks

import (
	"context"
	"fmt"

	"github.com/xroom/xroom/streams"
)

// Replay sends the room's dead letters to the webhook again, oldest first,
// batch at a time, and removes each batch the webhook takes. It stops at
// the first batch the webhook refuses, so the ones after it keep their
// order; run it again later. It returns how many messages were delivered.
func Replay(ctx context.Context, store *streams.Store, sender *Sender, room string, batch int) (int, error) {
	orDefault(&batch, defaultBatch)
	sent := 0
	after := streams.Zero
	for {
		dead, err := store.DeadLetters(ctx, room, after, batch)
		if err != nil {
			return sent, err
		}
		if len(dead) == 0 {
			return sent, nil
		}
		msgs := make([]Message, len(dead))
		ids := make([]streams.ID, len(dead))
		for i := range dead {
			msgs[i] = MessageOf(room, &dead[i].Entry)
			ids[i] = dead[i].ID
		}
		if err := sender.Send(ctx, newDeliveryID(), 1, msgs); err != nil {
			return sent, fmt.Errorf("replay %d dead letters of %s: %w", len(msgs), room, err)
		}
		if err := store.DropDeadLetters(ctx, room, ids); err != nil {
			return sent, fmt.Errorf("the webhook took %d dead letters of %s, but removing them failed (they will be sent again): %w", len(msgs), room, err)
		}
		sent += len(msgs)
		after = ids[len(ids)-1]
	}
}
