package authn

import (
	"context"
	"errors"
	"sync"
	"time"
)

// flightTimeout bounds a shared load. The load runs without the first
// caller's cancellation: that client hanging up must not fail the logins
// waiting on the same load.
const flightTimeout = 30 * time.Second

var errLoadFailed = errors.New("the shared load failed (see the log)")

// flight runs one load per key at a time; callers that ask for a key
// while its load runs wait for that load's result. A burst of logins
// with a key nobody used since the cache was last dropped (at start, or
// after any store write) then costs one store read, not one per login.
type flight[T any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[T]
}

type flightCall[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// do returns fn's result for key, running fn only if no load of key is
// under way. A waiting caller gives up when its own ctx ends; fn gets a
// context of its own (the caller's values, not its cancellation).
func (f *flight[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (T, error) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.val, c.err
		case <-ctx.Done():
			var zero T
			return zero, ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = map[string]*flightCall[T]{}
	}
	// Until fn returns, the result is a failure: what waiters see if fn
	// panics.
	c := &flightCall[T]{done: make(chan struct{}), err: errLoadFailed}
	f.calls[key] = c
	f.mu.Unlock()

	// Deferred, so that a panic in fn does not leave the key's waiters
	// (and every later caller) hanging.
	defer func() {
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flightTimeout)
	defer cancel()
	c.val, c.err = fn(lctx)
	return c.val, c.err
}
