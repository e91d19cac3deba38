package server

import (
	"io"
	"sync"

	"github.com/mxguard/mxguard/internal/deliver"
	"github.com/mxguard/mxguard/internal/spool"
)

// store makes an accepted message durable before its 250. Which one is
// chosen once, at start: with local delivery the message goes straight into
// the recipients' Maildirs (deliver.Maildir.Store says why), with a relay
// into the spool, for the delivery queue.
type store interface {
	// Store writes msg for env, whose ID is already set; on error nothing
	// of it is left behind. delivered, when not "", is the Maildir file
	// the message was delivered as.
	Store(env *spool.Envelope, msg io.Reader) (delivered string, err error)
}

type maildirStore struct{ md *deliver.Maildir }

func (m maildirStore) Store(env *spool.Envelope, msg io.Reader) (string, error) {
	return m.md.Store(env, msg)
}

type spoolStore struct {
	sp    *spool.Spool
	queue *deliver.Queue
	bufs  sync.Pool // copy buffers, so that large messages need no large reads
}

func newSpoolStore(sp *spool.Spool, q *deliver.Queue) *spoolStore {
	st := &spoolStore{sp: sp, queue: q}
	st.bufs.New = func() any { b := make([]byte, 32<<10); return &b }
	return st
}

func (st *spoolStore) Store(env *spool.Envelope, msg io.Reader) (string, error) {
	w, err := st.sp.Create(env)
	if err != nil {
		return "", err
	}
	bp := st.bufs.Get().(*[]byte)
	defer st.bufs.Put(bp)
	if _, err := io.CopyBuffer(w, msg, *bp); err != nil {
		w.Abort()
		return "", err
	}
	id, err := w.Commit()
	if err != nil {
		return "", err
	}
	st.queue.Enqueue(id)
	return "", nil
}
