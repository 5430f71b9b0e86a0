package apply

import (
	"context"

	"github.com/pgjet/pgjet/stream"
)

// message applies a logical message of a source transaction. Messages
// other than pgjet's own are for other consumers of the stream.
func (s *session) message(ctx context.Context, env *stream.Envelope, ch *stream.Change, seq uint64) error {
	return nil
}
