package local

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// NATSProcess is a standalone nats-server binary run as a child process
// from a config file: unlike the embedded NATS, it can be killed with
// SIGKILL, as a host crash would end it.
type NATSProcess struct {
	// Name names the server in errors.
	Name string
	// Conf is the config file; URL the client URL it listens on.
	Conf, URL string
	log       string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// StartNATSProcess runs nats-server (found on $PATH) with conf, whose
// client port is url's, and waits until a client can connect.
func StartNATSProcess(name, conf, url string) (*NATSProcess, error) {
	if err := serversAllowed("nats-server"); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("nats-server"); err != nil {
		return nil, &MissingToolError{Tool: "nats-server (go install github.com/nats-io/nats-server/v2@v2.15.2)", Searched: []string{"$PATH"}}
	}
	p := &NATSProcess{Name: name, Conf: conf, URL: url, log: conf + ".log"}
	return p, p.Start()
}

// Start starts the server again after Kill; it keeps its store directory.
func (p *NATSProcess) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command("nats-server", "-c", p.Conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A test binary killed by its timeout must not leave servers behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("start nats-server %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	deadline := time.Now().Add(natsReadyTimeout)
	for {
		nc, err := nats.Connect(p.URL, nats.Timeout(time.Second))
		if err == nil {
			nc.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("nats-server %s exited during startup; log %s", p.Name, p.log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-server %s not ready at %s within %s: %v; log %s", p.Name, p.URL, natsReadyTimeout, err, p.log)
		}
	}
}

// Kill ends the server with SIGKILL and waits for it to exit.
func (p *NATSProcess) Kill() { p.end(syscall.SIGKILL) }

// Stop ends the server with SIGTERM, its clean shutdown, and waits for
// it to exit; one that has not exited after natsReadyTimeout is killed.
func (p *NATSProcess) Stop() { p.end(syscall.SIGTERM) }

func (p *NATSProcess) end(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(natsReadyTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// Log returns the server's output so far.
func (p *NATSProcess) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// NewTestNATSProcess starts a NATSProcess from the config text conf and
// kills it in t.Cleanup, printing the tail of its log when the test failed.
func NewTestNATSProcess(t testing.TB, name, conf, url string) *NATSProcess {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := StartNATSProcess(name, path, url)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("nats-server %s log (warnings and errors, route redials left out):\n%s", name, tailString(notable(p.Log()), 6000))
		}
	})
	return p
}

// notable keeps the warning and error lines of a nats-server log, without
// the redials of a route to a killed node, which drown everything else.
func notable(log string) string {
	var b strings.Builder
	for _, l := range strings.Split(log, "\n") {
		if (strings.Contains(l, "[WRN]") || strings.Contains(l, "[ERR]") || strings.Contains(l, "leader")) && !strings.Contains(l, "Error trying to connect to route") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
