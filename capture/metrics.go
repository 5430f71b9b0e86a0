package capture

import (
	"sync"

	"github.com/pgjet/pgjet/stream"
)

// publishers holds the Publisher of each Capture's running session, for
// PendingAcks. It lives beside Capture rather than in it only until the
// field is merged into the struct.
var publishers sync.Map // *Capture → *stream.Publisher

// observe records pub as the running session's Publisher; nil when the
// session ends.
func (c *Capture) observe(pub *stream.Publisher) {
	if pub == nil {
		publishers.Delete(c)
		return
	}
	publishers.Store(c, pub)
}

// PendingAcks is the number of messages (and position marks) the running
// session has handed to JetStream and still awaits acknowledgements for;
// 0 between sessions. It does not block and is safe for concurrent use.
func (c *Capture) PendingAcks() int64 {
	if v, ok := publishers.Load(c); ok {
		return v.(*stream.Publisher).Pending()
	}
	return 0
}
