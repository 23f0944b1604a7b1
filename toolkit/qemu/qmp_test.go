package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// socketPair returns two connected unix stream sockets.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) net.Conn {
		f := os.NewFile(uintptr(fd), name)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := conn(fds[0], "client"), conn(fds[1], "server")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type request struct {
	Execute   string          `json:"execute"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
}

// fakeQMP is the server side of a QMP connection.
type fakeQMP struct {
	t    *testing.T
	conn net.Conn
	dec  *json.Decoder
	wmu  sync.Mutex
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

func (f *fakeQMP) send(s string) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.conn.Write([]byte(s + "\r\n"))
}

func (f *fakeQMP) recv() (request, error) {
	var r request
	err := f.dec.Decode(&r)
	return r, err
}

func (f *fakeQMP) reply(r request, ret string) {
	f.send(fmt.Sprintf(`{"return": %s, "id": %s}`, ret, r.ID))
}

func (f *fakeQMP) event(name, data string) {
	f.send(fmt.Sprintf(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": %q, "data": %s}`, name, data))
}

// startFake connects a Client to a fake server that has done the handshake;
// serve then runs in a goroutine with the server.
func startFake(t *testing.T, onEvent func(Event), serve func(f *fakeQMP)) *QMPClient {
	t.Helper()
	cc, sc := socketPair(t)
	f := &fakeQMP{t: t, conn: sc, dec: json.NewDecoder(sc)}
	go func() {
		f.send(greeting)
		r, err := f.recv()
		if err != nil || r.Execute != "qmp_capabilities" {
			t.Errorf("handshake: got %+v, %v", r, err)
			sc.Close()
			return
		}
		f.reply(r, "{}")
		serve(f)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := DialQMP(ctx, cc, onEvent)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestQMPGreetingAndCommand(t *testing.T) {
	c := startFake(t, nil, func(f *fakeQMP) {
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			switch r.Execute {
			case "query-status":
				f.reply(r, `{"status": "paused", "singlestep": false, "running": false}`)
			default:
				f.send(fmt.Sprintf(`{"error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}, "id": %s}`, r.Execute, r.ID))
			}
		}
	})
	g := c.Greeting()
	if g.Version != "7.2.22" || g.Package != "fake" || len(g.Capabilities) != 1 {
		t.Errorf("greeting = %+v", g)
	}
	ret, err := c.Command(context.Background(), "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ret), `"paused"`) {
		t.Errorf("return = %s", ret)
	}
	_, err = c.Command(context.Background(), "nonsense", map[string]any{"x": 1})
	var ce *CommandError
	if !vmerr.Is(err, vmerr.Refused) || !errors.As(err, &ce) || ce.Class != "CommandNotFound" {
		t.Errorf("error reply: %v (kind %q)", err, vmerr.KindOf(err))
	}
	if !strings.Contains(err.Error(), "nonsense") {
		t.Errorf("error does not name the command: %v", err)
	}
}

func TestQMPBigReply(t *testing.T) {
	big := strings.Repeat("x", 3<<20) // 3 MiB on one line
	c := startFake(t, nil, func(f *fakeQMP) {
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			f.reply(r, `"`+big+`"`)
		}
	})
	for i := 0; i < 2; i++ {
		ret, err := c.Command(context.Background(), "human-monitor-command", nil)
		if err != nil {
			t.Fatal(err)
		}
		var s string
		if err := json.Unmarshal(ret, &s); err != nil || len(s) != len(big) {
			t.Fatalf("reply of %d bytes, want %d (%v)", len(s), len(big), err)
		}
	}
}

func TestQMPEventsInterleaved(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	c := startFake(t, func(ev Event) {
		mu.Lock()
		seen = append(seen, ev.Name)
		mu.Unlock()
	}, func(f *fakeQMP) {
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			f.event("STOP", "{}")
			f.event("RESUME", "{}")
			f.reply(r, "{}")
			f.event("SHUTDOWN", `{"guest": false, "reason": "host-qmp-quit"}`)
		}
	})
	mark := c.Mark()
	if _, err := c.Command(context.Background(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// STOP arrived before the reply: a wait after the command still sees it.
	ev, err := c.WaitEvent(ctx, "STOP", nil, mark)
	if err != nil || ev.Seq != 0 {
		t.Fatalf("STOP: %+v %v", ev, err)
	}
	ev, err = c.WaitEvent(ctx, "SHUTDOWN", func(d json.RawMessage) bool {
		return strings.Contains(string(d), "host-qmp-quit")
	}, mark)
	if err != nil || ev.Seq != 2 || ev.Time.Unix() != 1700000000 {
		t.Fatalf("SHUTDOWN: %+v %v", ev, err)
	}
	// from beyond the events so far: only a later event counts.
	if _, err := c.Command(context.Background(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	ev, err = c.WaitEvent(ctx, "STOP", nil, 3)
	if err != nil || ev.Seq != 3 {
		t.Fatalf("second STOP: %+v %v", ev, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := c.WaitEvent(short, "RESET", nil, 0); !vmerr.Is(err, vmerr.Timeout) {
		t.Errorf("wait for a missing event: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 4 || seen[0] != "STOP" || seen[1] != "RESUME" || seen[2] != "SHUTDOWN" {
		t.Errorf("onEvent saw %v", seen)
	}
}

func TestQMPConcurrentCommands(t *testing.T) {
	const n = 64
	c := startFake(t, nil, func(f *fakeQMP) {
		// Collect requests in batches of 8 and answer each batch in reverse,
		// with events in between.
		var batch []request
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			batch = append(batch, r)
			if len(batch) == 8 {
				for i := len(batch) - 1; i >= 0; i-- {
					f.event("TICK", "{}")
					f.reply(batch[i], string(batch[i].Arguments))
				}
				batch = nil
			}
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ret, err := c.Command(context.Background(), "echo", map[string]int{"n": i})
			if err != nil {
				errs <- err
				return
			}
			var got struct{ N int }
			if err := json.Unmarshal(ret, &got); err != nil || got.N != i {
				errs <- fmt.Errorf("command %d got %s", i, ret)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(c.Events()); got != n {
		t.Errorf("%d events kept, want %d", got, n)
	}
}

func TestQMPServerDiesMidCommand(t *testing.T) {
	c := startFake(t, nil, func(f *fakeQMP) {
		f.recv()
		time.Sleep(100 * time.Millisecond)
		f.conn.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	_, err := c.Command(ctx, "query-status", nil)
	if !vmerr.Is(err, vmerr.Exited) {
		t.Fatalf("error %v, kind %q; want exited", err, vmerr.KindOf(err))
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("failed after %s; want at once", d)
	}
	// Later commands and waits fail at once too.
	t0 = time.Now()
	if _, err := c.Command(ctx, "query-status", nil); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("command after death: %v", err)
	}
	if _, err := c.WaitEvent(ctx, "SHUTDOWN", nil, 0); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("wait after death: %v", err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("took %s", d)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed")
	}
}

func TestQMPTimeout(t *testing.T) {
	c := startFake(t, nil, func(f *fakeQMP) {
		first := true
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			if first { // never answer the first command
				first = false
				continue
			}
			f.reply(r, `"ok"`)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Command(ctx, "stuck", nil)
	if !vmerr.Is(err, vmerr.Timeout) {
		t.Fatalf("got %v, want timeout", err)
	}
	ret, err := c.Command(context.Background(), "next", nil)
	if err != nil || string(ret) != `"ok"` {
		t.Fatalf("command after a timeout: %s %v", ret, err)
	}
}

func TestQMPNoGreeting(t *testing.T) {
	cc, sc := socketPair(t)
	go func() {
		sc.Write([]byte(`{"return": {}}` + "\n"))
	}()
	_, err := DialQMP(context.Background(), cc, nil)
	if !vmerr.Is(err, vmerr.Protocol) {
		t.Errorf("got %v, want protocol", err)
	}
	cc2, sc2 := socketPair(t)
	sc2.Close()
	if _, err := DialQMP(context.Background(), cc2, nil); !vmerr.Is(err, vmerr.Exited) {
		t.Errorf("closed before greeting: %v", err)
	}
	cc3, _ := socketPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := DialQMP(ctx, cc3, nil); !vmerr.Is(err, vmerr.Timeout) {
		t.Errorf("silent server: %v", err)
	}
}

// lateCtx has a deadline that has passed but does not know it yet: a
// context whose timer fires a moment after the socket's write deadline.
type lateCtx struct{ context.Context }

func (lateCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestQMPSendDeadlineIsTimeout: a write that fails on the socket's deadline
// before the context reports it is a timeout, not a dead QEMU (the
// checkpoint timeout test once got "sending: … i/o timeout" as kind exited).
func TestQMPSendDeadlineIsTimeout(t *testing.T) {
	c := startFake(t, nil, func(f *fakeQMP) {
		for {
			r, err := f.recv()
			if err != nil {
				return
			}
			f.reply(r, `"ok"`)
		}
	})
	_, err := c.Command(lateCtx{context.Background()}, "late", nil)
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "qmp late: sending") {
		t.Fatalf("got %v, want a timeout while sending", err)
	}
}
