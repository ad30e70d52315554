package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pipelinehq/pipeline/sdk/webhook"
)

type receiverFlags struct {
	on           bool
	addr, secret string
}

// sentField is the field of a record holding its append time (Unix ns), in
// the latency mode.
const sentField = `"sent_unix_ns":`

// arrival is what the receiver keeps per webhook-id: when it was first
// accepted, and the record's sent_unix_ns (0 when it has none), both Unix
// nanoseconds.
type arrival struct {
	At   int64 `json:"at"`
	Sent int64 `json:"sent,omitempty"`
}

// stats is what the receiver serves on GET /stats.
type stats struct {
	Requests   int64              `json:"requests"`    // POSTs received
	Accepted   int64              `json:"accepted"`    // verified (200)
	Duplicates int64              `json:"duplicates"`  // verified, for an id already accepted
	BadSig     int64              `json:"bad_sig"`     // failed verification (401)
	FirstBad   string             `json:"first_bad"`   // the first failure, with its id
	NoSent     int64              `json:"no_sent"`     // accepted bodies without a parsable sent_unix_ns
	Arrivals   map[string]arrival `json:"arrivals"`    // by webhook-id, the first acceptance
	StartedAt  int64              `json:"started_at"`  // Unix ns
	Other      int64              `json:"other_paths"` // requests to unknown paths
}

// hookReceiver verifies each POST and notes the first arrival of every
// webhook-id. Its per-request work is small: one body read into a pooled
// buffer, one HMAC, one map insert under a mutex.
type hookReceiver struct {
	v    webhook.Verifier
	bufs sync.Pool

	mu sync.Mutex
	st stats
}

func runReceiver(f receiverFlags) error {
	v, err := webhook.NewVerifier(webhook.SchemeStandard, f.secret)
	if err != nil {
		return err
	}
	r := &hookReceiver{v: v}
	r.bufs.New = func() any { return new(bytes.Buffer) }
	r.st.Arrivals = make(map[string]arrival, 1<<15)
	r.st.StartedAt = time.Now().UnixNano()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hook", r.hook)
	mux.HandleFunc("GET /stats", r.stats)
	mux.HandleFunc("GET /count", r.count)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		r.st.Other++
		r.mu.Unlock()
		http.NotFound(w, nil)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("http://%s\n", ln.Addr())
	os.Stdout.Sync()
	// The parent holds our stdin: when it goes away (EOF), so do we. The
	// parent normally ends us with SIGTERM after reading /stats.
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		select {
		case <-sigs:
		case <-done:
		}
		srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func (r *hookReceiver) hook(w http.ResponseWriter, req *http.Request) {
	at := time.Now().UnixNano()
	buf := r.bufs.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(req.Body)
	body := buf.Bytes()
	if err == nil {
		err = r.v.Verify(req.Header, body)
	}
	id := req.Header.Get(webhook.HeaderID)
	if err != nil {
		r.bufs.Put(buf)
		r.mu.Lock()
		r.st.Requests++
		r.st.BadSig++
		if r.st.FirstBad == "" {
			r.st.FirstBad = fmt.Sprintf("delivery %q: %v", id, err)
		}
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	sent := parseSent(body)
	r.bufs.Put(buf)
	r.mu.Lock()
	r.st.Requests++
	r.st.Accepted++
	if _, ok := r.st.Arrivals[id]; ok {
		r.st.Duplicates++
	} else {
		r.st.Arrivals[id] = arrival{At: at, Sent: sent}
		if sent == 0 {
			r.st.NoSent++
		}
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// parseSent finds "sent_unix_ns":<digits> in a body; 0 when absent.
func parseSent(body []byte) int64 {
	i := bytes.Index(body, []byte(sentField))
	if i < 0 {
		return 0
	}
	rest := body[i+len(sentField):]
	rest = bytes.TrimLeft(rest, " ")
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

func (r *hookReceiver) stats(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(&r.st)
}

// count answers the number of distinct ids accepted so far (cheap, for
// waiting).
func (r *hookReceiver) count(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	n := len(r.st.Arrivals)
	r.mu.Unlock()
	fmt.Fprintf(w, "%d\n", n)
}

// receiverProc is the parent's handle on a receiver process.
type receiverProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string // http://host:port
	hc    *http.Client
	once  sync.Once
}

// startReceiver re-executes this command as a receiver and reads its
// address.
func startReceiver() (*receiverProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-receiver", "-addr", "127.0.0.1:0", "-secret", secret)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &receiverProc{cmd: cmd, stdin: stdin, hc: &http.Client{Timeout: 30 * time.Second}}
	atCleanup(func() { p.stop() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("the receiver printed no address: %w", err)
	}
	p.url = strings.TrimSpace(line)
	if !strings.HasPrefix(p.url, "http://") {
		p.stop()
		return nil, fmt.Errorf("the receiver printed %q, not its address", line)
	}
	return p, nil
}

// stop ends the receiver (SIGTERM, then closing its stdin) and waits.
func (p *receiverProc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.stdin.Close()
		p.cmd.Wait()
	})
}

func (p *receiverProc) count() (int, error) {
	resp, err := p.hc.Get(p.url + "/count")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

func (p *receiverProc) stats() (*stats, error) {
	resp, err := p.hc.Get(p.url + "/stats")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("the receiver's /stats: %w", err)
	}
	return &st, nil
}
