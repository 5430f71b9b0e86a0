package local

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Ports handed out come from below Linux's ephemeral range (32768 and
// up), where outgoing connections take their source ports: a port found
// free there can be taken by any client connection before its server
// binds it. A port is handed out once per process, so tests running in
// parallel never get the same one.
const (
	portLow  = 10000
	portHigh = 32000
)

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that this process has not handed out before. The port is released
// before returning, so another process may take it first; callers that
// bind it later retry with a new port when that happens.
func FreePort() (int, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		p := portLow + rand.IntN(portHigh-portLow)
		if portsUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portsUsed[p] = true
		return p, nil
	}
	return 0, fmt.Errorf("find a free port: none free between %d and %d", portLow, portHigh)
}

// portInUse reports whether something is listening on 127.0.0.1:port, which
// tells a bind failure apart from other startup failures without reading
// server logs.
func portInUse(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return true
	}
	l.Close()
	return false
}
