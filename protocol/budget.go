package protocol

import (
	"context"
	"sync"
)

// RequestBudget bounds the bytes of request frames held at once across
// connections (Kafka's queued.max.request.bytes): a connection reserves its
// next frame's size, from the size prefix, before it reads the body, and
// gives it back once the request has been handled. While the budget is
// spent, connections stop reading (TCP pushes back on their clients) instead
// of the broker allocating for every frame announced at once. Servers given
// the same RequestBudget share it: the broker gives all its listeners one.
//
// It bounds frames, not what decoding them allocates (a constant factor
// more; see the package doc), nor responses. A frame larger than the whole
// budget waits until nothing else is held, then goes alone. Waiters are
// served in arrival order, so a large frame is not starved by small ones.
// It is safe for concurrent use.
type RequestBudget struct {
	max int64

	mu      sync.Mutex
	held    int64
	waiters []*budgetWaiter
	waits   int64 // reservations that had to wait, for tests and logs
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

// NewRequestBudget returns a budget of max bytes; max must be positive.
func NewRequestBudget(max int64) *RequestBudget { return &RequestBudget{max: max} }

// Held is the bytes currently reserved.
func (b *RequestBudget) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// Waits is how many reservations so far had to wait for the budget.
func (b *RequestBudget) Waits() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.waits
}

// acquire reserves n bytes (at most the whole budget), waiting while they
// are not free; it returns the bytes reserved, to be given to release, or
// the error of done or ctx if either ends the wait first.
func (b *RequestBudget) acquire(ctx context.Context, done <-chan struct{}, n int64) (int64, error) {
	n = min(n, b.max)
	b.mu.Lock()
	if len(b.waiters) == 0 && b.held+n <= b.max {
		b.held += n
		b.mu.Unlock()
		return n, nil
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.waits++
	b.mu.Unlock()
	var err error
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-done:
		err = errShutdown
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-w.ready: // granted meanwhile: hand it back
		b.held -= n
		b.grantLocked()
	default:
		for i, x := range b.waiters {
			if x == w {
				b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
				break
			}
		}
		b.grantLocked() // it may have blocked the ones behind it
	}
	return 0, err
}

// release gives back n bytes from acquire.
func (b *RequestBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.held -= n
	b.grantLocked()
	b.mu.Unlock()
}

// grantLocked wakes waiters in order while the first one fits.
func (b *RequestBudget) grantLocked() {
	for len(b.waiters) > 0 && b.held+b.waiters[0].n <= b.max {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.held += w.n
		close(w.ready)
	}
}
