package local

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startEcho runs a line echo server until the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line over c and reads it back.
func roundTrip(c net.Conn, line string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

func dialEcho(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	if got, err := roundTrip(c, "ping"); err != nil || got != "ping" {
		t.Fatalf("round trip through %s = %q, %v; want ping", addr, got, err)
	}
	return c
}

func TestProxy_CutAndHeal(t *testing.T) {
	target := startEcho(t)
	p, err := StartProxy(0, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	port := p.Port()
	if got, want := p.Addr(), "127.0.0.1:"+strconv.Itoa(port); got != want {
		t.Errorf("Addr() = %s, want %s", got, want)
	}

	c := dialEcho(t, p.Addr())
	eventually(t, 5*time.Second, "one forwarded connection", func() (bool, error) { return p.Conns() == 1, nil })

	p.Cut()
	p.Cut() // idempotent
	if p.Healed() {
		t.Error("Healed() after Cut")
	}
	t.Run("open connection dropped", func(t *testing.T) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == nil || isTimeout(err) {
			t.Fatalf("read on a cut connection: %v, want EOF or reset", err)
		}
		if got := p.Conns(); got != 0 {
			t.Errorf("Conns() = %d after Cut, want 0", got)
		}
	})
	t.Run("new dials refused", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err == nil {
			c.Close()
			t.Fatal("dial succeeded while cut")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial while cut: %v, want connection refused", err)
		}
	})

	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := p.Heal(); err != nil { // idempotent
		t.Fatal(err)
	}
	if got := p.Port(); got != port {
		t.Errorf("port after Heal = %d, want %d", got, port)
	}
	dialEcho(t, p.Addr())

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Heal(); err == nil {
		t.Error("Heal after Close succeeded, want error")
	}
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Error("dial succeeded after Close")
	}
}

// TestProxy_Blackhole: a blackholed link keeps its connections open and
// silent, in both directions and for new dials, and Heal ends them and
// forwards again.
func TestProxy_Blackhole(t *testing.T) {
	target := startEcho(t)
	p, err := StartProxy(0, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	c := dialEcho(t, p.Addr())
	p.Blackhole()
	p.Blackhole() // idempotent
	if p.Healed() {
		t.Error("Healed() while blackholed")
	}
	silent := func(t *testing.T, c net.Conn) {
		t.Helper()
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		defer c.SetDeadline(time.Time{})
		if _, err := io.WriteString(c, "lost\n"); err != nil {
			t.Fatalf("write while blackholed: %v, want it to succeed", err)
		}
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read while blackholed: %v, want a timeout", err)
		}
	}
	t.Run("open connection silent", func(t *testing.T) { silent(t, c) })
	t.Run("new connection silent", func(t *testing.T) {
		n, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err != nil {
			t.Fatalf("dial while blackholed: %v, want it accepted", err)
		}
		defer n.Close()
		silent(t, n)
	})
	if err := p.Heal(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("read on a connection blackholed then healed: %v, want it closed", err)
	}
	dialEcho(t, p.Addr())
}

func TestProxy_FixedPortAndDeadTarget(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dead, err := FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	p, err := StartProxy(port, "127.0.0.1:"+strconv.Itoa(dead))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.Port(); got != port {
		t.Errorf("Port() = %d, want %d", got, port)
	}
	c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("read through a proxy whose target is down: %v, want the connection closed", err)
	}

	if _, err := StartProxy(0, "no-port"); err == nil {
		t.Error("StartProxy with a target without port succeeded")
	}
	if _, err := StartProxy(port, "127.0.0.1:1"); err == nil {
		t.Error("StartProxy on a taken port succeeded")
	}
}

// TestProxy_Topology cuts one region of a proxied topology: its leafnode
// link must drop and stay down (the hub does not advertise a way around
// the proxy) while the other region stays connected, then come back after
// Heal.
func TestProxy_Topology(t *testing.T) {
	top := NewTestTopology(t, TopologyOptions{Regions: []string{"r1", "r2"}, Proxied: true})
	if got, want := len(top.Proxies), 2; got != want {
		t.Fatalf("len(Proxies) = %d, want %d", got, want)
	}
	hub, r1 := top.Hub.Server(), top.Regions["r1"].Server()
	if got, want := hub.NumLeafNodes(), 2; got != want {
		t.Fatalf("hub leafnodes = %d, want %d", got, want)
	}

	top.Proxies["r1"].Cut()
	eventually(t, 10*time.Second, "r1 leafnode link down", func() (bool, error) {
		return r1.NumLeafNodes() == 0 && hub.NumLeafNodes() == 1, nil
	})
	// r1 redials every second: give it a few tries to find a way around.
	for range 30 {
		if n := r1.NumLeafNodes(); n != 0 {
			t.Fatalf("r1 has %d leafnode connections while its proxy is cut", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := top.Regions["r2"].Server().NumLeafNodes(), 1; got != want {
		t.Errorf("r2 leafnodes during r1's cut = %d, want %d", got, want)
	}

	if err := top.Proxies["r1"].Heal(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "r1 leafnode link back", func() (bool, error) {
		return r1.NumLeafNodes() == 1 && hub.NumLeafNodes() == 2, nil
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
