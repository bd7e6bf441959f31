package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// LinkOptions shape a Link like a wide-area connection to a remote registry.
type LinkOptions struct {
	// BitsPerSecond caps the bytes sent back to clients, shared by all connections like one
	// access link. Zero: unlimited.
	BitsPerSecond int64
	// RTT delays every chunk by half of it in each direction (and so the TCP handshake's
	// first answer by a whole RTT). Zero: none.
	RTT time.Duration
}

// Link is a TCP proxy that emulates the path to a remote registry: it forwards listen to
// target, throttled and delayed as its options say, and counts the bytes it carried back.
type Link struct {
	Addr string

	target string
	opts   LinkOptions
	down   *rate.Limiter

	bytesDown atomic.Int64
	conns     atomic.Int64

	mu       sync.Mutex
	l        net.Listener
	open     map[net.Conn]struct{}
	stopped  bool
	listenAt string
}

// StartLink listens on listen ("host:0" picks a port) and forwards to target.
func StartLink(listen, target string, opts LinkOptions) (*Link, error) {
	k := &Link{target: target, opts: opts, open: map[net.Conn]struct{}{}}
	if opts.BitsPerSecond > 0 {
		bps := float64(opts.BitsPerSecond) / 8
		k.down = rate.NewLimiter(rate.Limit(bps), linkChunk)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("link to %s: %w", target, err)
	}
	k.l, k.Addr, k.listenAt = l, l.Addr().String(), l.Addr().String()
	go k.serve(l)
	return k, nil
}

const linkChunk = 32 << 10

// BytesDown is how many bytes the far side sent back through the link so far.
func (k *Link) BytesDown() int64 { return k.bytesDown.Load() }

// Conns is how many connections the link accepted so far.
func (k *Link) Conns() int64 { return k.conns.Load() }

// Stop closes the listener and every open connection: the remote is gone (connection refused).
func (k *Link) Stop() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	k.stopped = true
	_ = k.l.Close()
	for c := range k.open {
		_ = c.Close()
	}
}

// Resume listens again on the same address after Stop.
func (k *Link) Resume() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped {
		return nil
	}
	l, err := net.Listen("tcp", k.listenAt)
	if err != nil {
		return fmt.Errorf("link %s: listen again: %w", k.listenAt, err)
	}
	k.l, k.stopped = l, false
	go k.serve(l)
	return nil
}

func (k *Link) track(c net.Conn, add bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if add {
		if k.stopped {
			return false
		}
		k.open[c] = struct{}{}
	} else {
		delete(k.open, c)
	}
	return true
}

func (k *Link) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		k.conns.Add(1)
		go k.handle(c)
	}
}

func (k *Link) handle(client net.Conn) {
	server, err := net.Dial("tcp", k.target)
	if err != nil {
		_ = client.Close()
		return
	}
	if !k.track(client, true) || !k.track(server, true) {
		_ = client.Close()
		_ = server.Close()
		return
	}
	defer func() {
		k.track(client, false)
		k.track(server, false)
	}()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); k.pipe(server, client, nil, nil) }()
	go func() { defer wg.Done(); k.pipe(client, server, k.down, &k.bytesDown) }()
	wg.Wait()
}

// pipe copies src to dst through a delay line of RTT/2, throttled by lim, then half-closes dst.
func (k *Link) pipe(dst, src net.Conn, lim *rate.Limiter, count *atomic.Int64) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	delay := k.opts.RTT / 2
	// The delay line holds what is "on the wire"; its bound keeps memory flat however fast the
	// sender is (TCP back-pressure then reaches the sender).
	line := make(chan chunk, 64)
	go func() {
		defer close(line)
		for {
			b := make([]byte, linkChunk)
			n, err := src.Read(b)
			if n > 0 {
				line <- chunk{b[:n], time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			_ = dst.Close()
		}
		// Unblock the reader if dst went away first.
		_ = src.Close()
		for range line {
		}
	}()
	for c := range line {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if lim != nil {
			if err := lim.WaitN(context.Background(), len(c.b)); err != nil {
				return
			}
		}
		if _, err := dst.Write(c.b); err != nil {
			if !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrClosedPipe) {
				return
			}
			return
		}
		if count != nil {
			count.Add(int64(len(c.b)))
		}
	}
}
