package local

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// proxyDialTimeout bounds the dial to the target for one accepted
// connection; a target that does not answer costs the client that long.
const proxyDialTimeout = 5 * time.Second

// proxyRelistenTimeout bounds how long Heal retries binding the port that
// Cut released.
const proxyRelistenTimeout = 5 * time.Second

// Proxy forwards TCP connections from a port on 127.0.0.1 to a target
// address. Partition tests put one between a region's leafnode and its hub:
// Cut drops the link for real (listener and every open connection closed,
// so new dials are refused) and Heal lets it come back on the same port.
// Its methods are safe for concurrent use.
type Proxy struct {
	target string
	port   int

	mu     sync.Mutex
	ln     net.Listener // nil while cut or closed
	conns  map[net.Conn]struct{}
	closed bool
	// blackholed drops every byte and forwards no new connection; held
	// are the clients accepted meanwhile.
	blackholed bool
	held       map[net.Conn]struct{}
	// rate, when above zero, is the bytes per second each direction of
	// each connection forwards: a slow link between regions.
	rate int
	wg   sync.WaitGroup // accept loops and copy goroutines
}

// StartProxy listens on 127.0.0.1:listenPort (0 picks a free port, which
// Heal then reuses) and forwards every connection to target (host:port).
// The target is dialled per connection, so it need not be up yet.
func StartProxy(listenPort int, target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("start proxy: target %q is not host:port: %w", target, err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", listenPort))
	if err != nil {
		return nil, fmt.Errorf("start proxy to %s: %w", target, err)
	}
	p := &Proxy{
		target: target,
		port:   ln.Addr().(*net.TCPAddr).Port,
		ln:     ln,
		conns:  map[net.Conn]struct{}{},
		held:   map[net.Conn]struct{}{},
	}
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

// Addr returns the host:port clients dial.
func (p *Proxy) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// Port returns the port the proxy listens on, the same before and after a
// Cut and Heal.
func (p *Proxy) Port() int { return p.port }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Conns returns how many forwarded connections are open.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) / 2
}

// Cut closes the listener and every open connection, both the client's and
// the target's side, so peers see the link drop and new dials are refused
// until Heal. It does not block and is idempotent.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut()
}

func (p *Proxy) cut() {
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	p.closeConns()
}

// closeConns closes every connection, forwarded or held.
func (p *Proxy) closeConns() {
	for _, m := range []map[net.Conn]struct{}{p.conns, p.held} {
		for c := range m {
			c.Close()
		}
		clear(m)
	}
}

// Blackhole drops, from now on, every byte in both directions and accepts
// new connections without forwarding them, closing nothing: a peer's
// writes succeed and its reads wait, as behind a firewall that drops
// packets. It does not block and is idempotent; Heal ends it.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = true
}

// Throttle limits each direction of every connection, open or new, to
// bytesPerSec (0 lifts the limit): a slow link between regions, which
// makes a mirror take seconds to copy what loopback copies at once.
func (p *Proxy) Throttle(bytesPerSec int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = bytesPerSec
}

// pace sleeps as long as forwarding n bytes takes at the throttled rate.
func (p *Proxy) pace(n int) {
	p.mu.Lock()
	rate := p.rate
	p.mu.Unlock()
	if rate > 0 {
		time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
	}
}

func (p *Proxy) dropping() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackholed
}

// Healed reports whether the proxy listens and forwards (it was not Cut or
// blackholed, or was healed since).
func (p *Proxy) Healed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ln != nil && !p.blackholed
}

// Heal listens again on the same port and forwards new connections. It is
// idempotent; it fails after Close, or when the port was taken by someone
// else while the proxy was cut.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("heal proxy: closed")
	}
	if p.blackholed {
		// The connections lost bytes: they end, as a link that comes back
		// after its peers gave up on it.
		p.blackholed = false
		p.closeConns()
	}
	if p.ln != nil {
		return nil
	}
	// The port was ours a moment ago; a bind can still fail briefly while
	// the kernel finishes closing the old listener.
	deadline := time.Now().Add(proxyRelistenTimeout)
	for {
		ln, err := net.Listen("tcp", p.Addr())
		if err == nil {
			p.ln = ln
			p.wg.Add(1)
			go p.accept(ln)
			return nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return fmt.Errorf("heal proxy to %s: listen again on %s: %w", p.target, p.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close cuts the proxy for good and waits for its goroutines. It is
// idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.cut()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// accept forwards the connections of one listener until it is closed.
func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			// Closed by Cut or Close. Other accept errors on a loopback
			// listener are not worth retrying in a test helper.
			return
		}
		p.wg.Add(1)
		go p.forward(ln, c)
	}
}

// forward dials the target for client c, accepted on ln, and copies bytes
// both ways until either side closes; then it closes both, as a dropped
// link would.
func (p *Proxy) forward(ln net.Listener, c net.Conn) {
	defer p.wg.Done()
	if p.swallow(ln, c) {
		return
	}
	t, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.ln != ln {
		// Cut while dialling: this connection belongs to the old link.
		p.mu.Unlock()
		c.Close()
		t.Close()
		return
	}
	p.conns[c], p.conns[t] = struct{}{}, struct{}{}
	p.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 && !p.dropping() {
				p.pace(n)
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go pipe(t, c)
	go pipe(c, t)
	<-done
	c.Close()
	t.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, t)
	p.mu.Unlock()
}

// swallow holds client c, accepted on ln while the proxy is blackholed:
// it reads and drops what c sends until c is closed (by Cut, Heal or
// Close, or the client), and reports whether it did.
func (p *Proxy) swallow(ln net.Listener, c net.Conn) bool {
	p.mu.Lock()
	if !p.blackholed || p.ln != ln {
		p.mu.Unlock()
		return false
	}
	p.held[c] = struct{}{}
	p.mu.Unlock()
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	p.mu.Lock()
	delete(p.held, c)
	p.mu.Unlock()
	return true
}
