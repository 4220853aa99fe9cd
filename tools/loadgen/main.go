// loadgen: the benchmark's load generator and backend server (kbp bench
// compare). One static binary, no dependencies, two roles:
//
//	loadgen serve --name NAME --port P[,P...]
//	    a minimal HTTP/1.1 server inside a backend pod: every request is
//	    answered with the pod's name; "Connection: close" closes after the
//	    answer (the server closes first, so TIME_WAIT stays on the server side
//	    and the client never runs out of ports). Prints "ready".
//
//	loadgen client
//	    inside the client pod: reads one JSON command per stdin line and
//	    writes one JSON result per stdout line (see command/result below).
//	    Prints {"ready":true} first.
//
// Commands:
//
//	{"op":"conn", "targets":[...], "concurrency":C, "durationMs":D}
//	    new TCP connection per request (connect, GET with Connection: close,
//	    read to EOF); connect latency = dial time, request latency = dial to
//	    last byte. Targets are used round robin per worker.
//	{"op":"keepalive", "targets":[...], "concurrency":C, "durationMs":D}
//	    C persistent connections, requests back to back on each.
//	{"op":"until", "target":"ip:port", "want":"name", "timeoutMs":T, "pauseUs":P}
//	    new connections one after another (P µs apart) until NAME answers;
//	    reports the wall-clock time (epoch ms) of that first answer. Polling
//	    starts when the command arrives, so the caller sends it before the
//	    change it times.
//
// Every result carries the process's own CPU time (user+system) spent during
// the command, so the caller can tell whether the generator was the
// bottleneck.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen serve --name NAME --port P[,P...] | loadgen client")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		name := fs.String("name", "", "answer with this name")
		ports := fs.String("port", "8080", "comma-separated ports")
		_ = fs.Parse(os.Args[2:])
		if *name == "" {
			fmt.Fprintln(os.Stderr, "serve: --name is required")
			os.Exit(2)
		}
		serve(*name, strings.Split(*ports, ","))
	case "client":
		client()
	default:
		fmt.Fprintf(os.Stderr, "loadgen: unknown role %q\n", os.Args[1])
		os.Exit(2)
	}
}

// ---- server ----

func serve(name string, ports []string) {
	body := name + "\n"
	for _, p := range ports {
		ln, err := net.Listen("tcp4", "0.0.0.0:"+p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					continue
				}
				go handle(c, body)
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

func handle(c net.Conn, body string) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 4096)
	keep := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	closing := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body))
	for {
		// Read one request head (no bodies: the client only sends GETs).
		close := false
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 {
				break
			}
			if len(line) > 11 && bytes.EqualFold(line[:11], []byte("connection:")) && bytes.Contains(bytes.ToLower(line), []byte("close")) {
				close = true
			}
		}
		if close {
			_, _ = c.Write(closing)
			return
		}
		if _, err := c.Write(keep); err != nil {
			return
		}
	}
}

// ---- client ----

type command struct {
	Op          string   `json:"op"`
	Targets     []string `json:"targets"`
	Target      string   `json:"target"`
	Want        string   `json:"want"`
	Concurrency int      `json:"concurrency"`
	DurationMs  int      `json:"durationMs"`
	TimeoutMs   int      `json:"timeoutMs"`
	PauseUs     int      `json:"pauseUs"`
}

type dist struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
	N   int     `json:"n"`
}

type result struct {
	Op         string         `json:"op"`
	Error      string         `json:"error,omitempty"`
	Requests   int64          `json:"requests"`
	Errors     int64          `json:"errors"`
	FirstError string         `json:"firstError,omitempty"`
	Seconds    float64        `json:"seconds"`
	PerSecond  float64        `json:"perSecond"`
	ConnectMs  *dist          `json:"connectMs,omitempty"`
	RequestMs  *dist          `json:"requestMs,omitempty"`
	Backends   map[string]int `json:"backends,omitempty"`
	CPUSeconds float64        `json:"cpuSeconds"`
	// until
	FoundAt  float64 `json:"foundAt,omitempty"`
	Attempts int64   `json:"attempts,omitempty"`
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func distOf(xs []float64) *dist {
	if len(xs) == 0 {
		return &dist{}
	}
	sort.Float64s(xs)
	at := func(p float64) float64 {
		i := int(p/100*float64(len(xs))+0.999999) - 1
		if i < 0 {
			i = 0
		}
		if i >= len(xs) {
			i = len(xs) - 1
		}
		return xs[i]
	}
	return &dist{P50: at(50), P90: at(90), P99: at(99), Max: xs[len(xs)-1], N: len(xs)}
}

func client() {
	out := json.NewEncoder(os.Stdout)
	_ = out.Encode(map[string]bool{"ready": true})
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		var cmd command
		if err := json.Unmarshal(in.Bytes(), &cmd); err != nil {
			_ = out.Encode(result{Error: "bad command: " + err.Error()})
			continue
		}
		cpu0 := cpuSeconds()
		var res result
		switch cmd.Op {
		case "conn":
			res = runConn(cmd)
		case "keepalive":
			res = runKeepalive(cmd)
		case "until":
			res = runUntil(cmd)
		default:
			res = result{Error: "unknown op " + cmd.Op}
		}
		res.Op = cmd.Op
		res.CPUSeconds = cpuSeconds() - cpu0
		_ = out.Encode(res)
	}
}

const closeReq = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
const keepReq = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"

// oneShot: dial, one request with Connection: close, read to EOF.
func oneShot(target string, timeout time.Duration) (connect, total time.Duration, backend string, err error) {
	t0 := time.Now()
	c, err := net.DialTimeout("tcp4", target, timeout)
	if err != nil {
		return 0, 0, "", err
	}
	connect = time.Since(t0)
	defer c.Close()
	_ = c.SetDeadline(t0.Add(timeout))
	if _, err = io.WriteString(c, closeReq); err != nil {
		return connect, 0, "", err
	}
	buf, err := io.ReadAll(c)
	if err != nil {
		return connect, 0, "", err
	}
	total = time.Since(t0)
	i := bytes.Index(buf, []byte("\r\n\r\n"))
	if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200")) || i < 0 {
		return connect, total, "", fmt.Errorf("bad response %q", string(buf[:min(len(buf), 80)]))
	}
	return connect, total, strings.TrimSpace(string(buf[i+4:])), nil
}

type collector struct {
	mu       sync.Mutex
	connect  []float64
	request  []float64
	backends map[string]int
	errors   int64
	firstErr string
}

// merge adds one worker's samples.
func (c *collector) merge(connect, request []float64, seen map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.connect = append(c.connect, connect...)
	c.request = append(c.request, request...)
	for k, v := range seen {
		c.backends[k] += v
	}
}

func (c *collector) fail(err error) {
	c.mu.Lock()
	c.errors++
	if c.firstErr == "" {
		c.firstErr = err.Error()
	}
	c.mu.Unlock()
}

func runConn(cmd command) result {
	if len(cmd.Targets) == 0 || cmd.Concurrency < 1 {
		return result{Error: "conn: targets and concurrency are required"}
	}
	col := &collector{backends: map[string]int{}}
	deadline := time.Now().Add(time.Duration(cmd.DurationMs) * time.Millisecond)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cmd.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var conns, reqs []float64
			seen := map[string]int{}
			for i := w; time.Now().Before(deadline); i++ {
				ct, tt, backend, err := oneShot(cmd.Targets[i%len(cmd.Targets)], 2*time.Second)
				if err != nil {
					col.fail(err)
					continue
				}
				conns = append(conns, float64(ct.Microseconds())/1000)
				reqs = append(reqs, float64(tt.Microseconds())/1000)
				seen[backend]++
			}
			col.merge(conns, reqs, seen)
		}(w)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	n := int64(len(col.request))
	return result{Requests: n, Errors: col.errors, FirstError: col.firstErr, Seconds: secs, PerSecond: float64(n) / secs,
		ConnectMs: distOf(col.connect), RequestMs: distOf(col.request), Backends: col.backends}
}

func runKeepalive(cmd command) result {
	if len(cmd.Targets) == 0 || cmd.Concurrency < 1 {
		return result{Error: "keepalive: targets and concurrency are required"}
	}
	col := &collector{backends: map[string]int{}}
	deadline := time.Now().Add(time.Duration(cmd.DurationMs) * time.Millisecond)
	start := time.Now()
	var total atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < cmd.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var lat []float64
			seen := map[string]int{}
			target := cmd.Targets[w%len(cmd.Targets)]
			c, err := net.DialTimeout("tcp4", target, 2*time.Second)
			if err != nil {
				col.fail(err)
				return
			}
			defer c.Close()
			r := bufio.NewReaderSize(c, 4096)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				_ = c.SetDeadline(t0.Add(2 * time.Second))
				if _, err := io.WriteString(c, keepReq); err != nil {
					col.fail(err)
					return
				}
				backend, err := readKeepalive(r)
				if err != nil {
					col.fail(err)
					return
				}
				lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
				seen[backend]++
			}
			total.Add(int64(len(lat)))
			col.merge(nil, lat, seen)
		}(w)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	return result{Requests: total.Load(), Errors: col.errors, FirstError: col.firstErr, Seconds: secs, PerSecond: float64(total.Load()) / secs,
		RequestMs: distOf(col.request), Backends: col.backends}
}

// readKeepalive reads one response (status line, headers with Content-Length, body).
func readKeepalive(r *bufio.Reader) (string, error) {
	length := -1
	for first := true; ; first = false {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return "", err
		}
		if first && !bytes.HasPrefix(line, []byte("HTTP/1.1 200")) {
			return "", fmt.Errorf("bad status %q", string(line))
		}
		if len(line) <= 2 {
			break
		}
		if bytes.HasPrefix(bytes.ToLower(line), []byte("content-length:")) {
			length, _ = strconv.Atoi(strings.TrimSpace(string(line[15:])))
		}
	}
	if length < 0 {
		return "", fmt.Errorf("no content-length")
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return "", err
	}
	return strings.TrimSpace(string(body)), nil
}

func runUntil(cmd command) result {
	timeout := time.Duration(cmd.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	pause := time.Duration(cmd.PauseUs) * time.Microsecond
	deadline := time.Now().Add(timeout)
	var attempts int64
	var errors int64
	for time.Now().Before(deadline) {
		attempts++
		_, _, backend, err := oneShot(cmd.Target, 500*time.Millisecond)
		if err != nil {
			errors++
		} else if backend == cmd.Want {
			at := time.Now()
			return result{FoundAt: float64(at.UnixNano()) / 1e6, Attempts: attempts, Errors: errors}
		}
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	return result{Error: fmt.Sprintf("%s did not answer on %s within %s", cmd.Want, cmd.Target, timeout), Attempts: attempts, Errors: errors}
}
