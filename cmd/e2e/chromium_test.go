package e2e

// A headless Chromium driven through the DevTools protocol over a pipe
// (--remote-debugging-pipe: commands in on fd 3, answers out on fd 4,
// each a JSON message ended by a NUL byte), so that a test can keep a
// page open, let its script run, and read the DOM it rendered, as a
// person's browser would show it. No websocket and no Go dependency.
// https://chromedevtools.github.io/devtools-protocol/

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// browser is a headless Chromium.
type browser struct {
	t   *testing.T
	cmd *exec.Cmd
	in  *os.File // Chromium's fd 3

	mu      sync.Mutex
	next    int
	pending map[int]chan cdpReply
	done    chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// startChromium starts Debian's chromium. Its absence fails the test: the
// console is tested as a person sees it, or not at all.
func startChromium(t *testing.T) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found on $PATH: install it (apt-get install chromium; .ci/deps does)")
	}
	cr, cw, err := os.Pipe() // commands: we write cw, Chromium reads cr as fd 3
	if err != nil {
		t.Fatal(err)
	}
	ar, aw, err := os.Pipe() // answers: Chromium writes aw as fd 4, we read ar
	if err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, in: cw, pending: map[int]chan cdpReply{}, done: make(chan struct{})}
	// --no-sandbox: tests run as root, where Chromium's sandbox refuses
	// to start.
	b.cmd = exec.Command(path, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
		"--user-data-dir="+t.TempDir(), "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
		"--window-size=1100,1400", "about:blank")
	b.cmd.ExtraFiles = []*os.File{cr, aw}
	stderr := &tailBuffer{}
	b.cmd.Stderr = stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	cr.Close()
	aw.Close()
	go b.read(ar)
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		_ = b.cmd.Wait()
		cw.Close()
		if t.Failed() {
			t.Logf("--- chromium stderr (tail) ---\n%s", stderr.String())
		}
	})
	return b
}

// read dispatches Chromium's answers to their callers; events are
// dropped.
func (b *browser) read(r *os.File) {
	defer close(b.done)
	br := bufio.NewReader(r)
	for {
		msg, err := br.ReadBytes(0)
		if err != nil {
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(msg[:len(msg)-1], &m) != nil || m.ID == 0 {
			continue
		}
		b.mu.Lock()
		ch := b.pending[m.ID]
		delete(b.pending, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends one command (to a page's session when session is set) and
// decodes its result into out.
func (b *browser) call(session, method string, params, out any) error {
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	if _, err := b.in.Write(append(data, 0)); err != nil {
		return fmt.Errorf("%s: write to chromium: %w", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			return fmt.Errorf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(r.Result, out)
		}
		return nil
	case <-b.done:
		return fmt.Errorf("%s: chromium exited", method)
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: no answer from chromium within 30s", method)
	}
}

// page is a tab of the browser.
type page struct {
	b       *browser
	session string
}

// open opens url in a new tab.
func (b *browser) open(url string) *page {
	b.t.Helper()
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := b.call("", "Target.createTarget", map[string]any{"url": url}, &target); err != nil {
		b.t.Fatal(err)
	}
	var att struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.call("", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &att); err != nil {
		b.t.Fatal(err)
	}
	return &page{b: b, session: att.SessionID}
}

// eval evaluates a JavaScript expression in the page and returns its
// value as a string ("" for null or undefined).
func (p *page) eval(expr string) (string, error) {
	var res struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := p.b.call(p.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &res); err != nil {
		return "", err
	}
	if e := res.ExceptionDetails; e != nil {
		return "", fmt.Errorf("evaluate %s: %s", expr, e.Text)
	}
	if res.Result.Value == nil {
		return "", nil
	}
	return fmt.Sprint(res.Result.Value), nil
}

// screenshot saves the whole page as a PNG.
func (p *page) screenshot(path string) error {
	var res struct {
		Data string `json:"data"`
	}
	if err := p.b.call(p.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &res); err != nil {
		return err
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		return err
	}
	return os.WriteFile(path, png, 0o644)
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 8192 {
		b.buf = b.buf[len(b.buf)-8192:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
