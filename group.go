package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/leproxy/leproxy/dbproxy"
)

// group owns the serving goroutines: the first one that fails for a reason
// other than a shutdown cancels the run, and wait returns that error.
type group struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func newGroup(cancel context.CancelFunc) *group { return &group{cancel: cancel} }

func (g *group) goServe(name string, serve func() error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := serve()
		if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, dbproxy.ErrServerClosed) {
			return
		}
		g.mu.Lock()
		if g.err == nil {
			g.err = fmt.Errorf("%s: %w", name, err)
		}
		g.mu.Unlock()
		g.cancel()
	}()
}

func (g *group) wait() error {
	g.wg.Wait()
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// parallel runs each shutdown function with ctx at the same time and
// returns their errors in order.
func parallel(ctx context.Context, fns []func(context.Context) error) []error {
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx)
		}()
	}
	wg.Wait()
	return errs
}
