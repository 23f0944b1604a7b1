package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// fakeAgent answers like qemu-guest-agent on a unix socket: sync, exec
// (a process "exits" on the second status call), files in a map.
type fakeAgent struct {
	mu    sync.Mutex
	files map[string][]byte
	mute  bool
}

func (f *fakeAgent) serve(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "qga.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.handle(c)
		}
	}()
	return sock
}

func (f *fakeAgent) handle(c net.Conn) {
	defer c.Close()
	c.Write([]byte("{\"return\": 17}\n")) // a stale answer of an earlier client
	r := bufio.NewReader(c)
	polls := map[int]int{}
	handles := map[int64]string{}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		if f.mute {
			continue
		}
		var req struct {
			Execute string         `json:"execute"`
			Args    map[string]any `json:"arguments"`
		}
		json.Unmarshal(bytes.TrimLeft(line, "\xff"), &req)
		reply := func(v any) { b, _ := json.Marshal(map[string]any{"return": v}); c.Write(append(b, '\n')) }
		switch req.Execute {
		case "guest-sync-delimited":
			c.Write([]byte{0xff})
			reply(req.Args["id"])
			// As the real agent does for the 0xFF in front of the request.
			c.Write([]byte(`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\377'"}}` + "\n"))
		case "guest-sync":
			reply(req.Args["id"])
		case "guest-exec":
			reply(map[string]any{"pid": 42})
		case "guest-exec-status":
			polls[42]++
			if polls[42] < 2 {
				reply(map[string]any{"exited": false})
				continue
			}
			reply(map[string]any{"exited": true, "exitcode": 3, "out-data": base64.StdEncoding.EncodeToString([]byte("out\n")), "err-data": base64.StdEncoding.EncodeToString([]byte("err\n"))})
		case "guest-file-open":
			if req.Args["path"] == "/nope" {
				c.Write([]byte(`{"error": {"class": "GenericError", "desc": "failed to open file '/nope' (mode: 'r'): No such file or directory"}}` + "\n"))
				continue
			}
			h := int64(len(handles) + 1000)
			handles[h] = req.Args["path"].(string)
			if req.Args["mode"] == "w" {
				f.mu.Lock()
				f.files[handles[h]] = nil
				f.mu.Unlock()
			}
			reply(h)
		case "guest-file-read":
			f.mu.Lock()
			data := f.files[handles[int64(req.Args["handle"].(float64))]]
			f.mu.Unlock()
			reply(map[string]any{"count": len(data), "buf-b64": base64.StdEncoding.EncodeToString(data), "eof": true})
		case "guest-file-write":
			b, _ := base64.StdEncoding.DecodeString(req.Args["buf-b64"].(string))
			f.mu.Lock()
			p := handles[int64(req.Args["handle"].(float64))]
			f.files[p] = append(f.files[p], b...)
			f.mu.Unlock()
			reply(map[string]any{"count": len(b), "eof": false})
		case "guest-file-close":
			reply(map[string]any{})
		}
	}
}

func TestClientAgainstAFakeAgent(t *testing.T) {
	pollInterval = time.Millisecond
	f := &fakeAgent{files: map[string][]byte{"/etc/hostname": []byte("lab\n")}}
	sock := f.serve(t)
	ctx := context.Background()
	c, err := Dial(ctx, "vm1", sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Run(ctx, "echo out; echo err >&2; exit 3", command.Options{Env: map[string]string{"A": "1"}, Stdin: strings.NewReader("in")})
	if err != nil || r.Stdout != "out\n" || r.Stderr != "err\n" || r.Output != "out\nerr\n" || r.Code != 3 {
		t.Fatalf("run: %+v %v", r, err)
	}
	if b, err := c.ReadFile(ctx, "/etc/hostname"); err != nil || string(b) != "lab\n" {
		t.Fatalf("read: %q %v", b, err)
	}
	big := bytes.Repeat([]byte("x"), 3<<20)
	if err := c.WriteFile(ctx, "/tmp/big", big); err != nil || !bytes.Equal(f.files["/tmp/big"], big) {
		t.Fatalf("write: %v (%d bytes there)", err, len(f.files["/tmp/big"]))
	}
	if _, err := c.ReadFile(ctx, "/nope"); !vmerr.Is(err, vmerr.Refused) || !strings.Contains(err.Error(), "No such file") {
		t.Errorf("missing file: %v", err)
	}
	if err := c.Shutdown("explode"); !vmerr.Is(err, vmerr.Usage) {
		t.Errorf("bad mode: %v", err)
	}
}

// TestNoAgentFailsFast: a port nobody answers on fails within the sync
// timeout, saying what is missing.
func TestNoAgentFailsFast(t *testing.T) {
	f := &fakeAgent{mute: true}
	sock := f.serve(t)
	t0 := time.Now()
	_, err := Dial(context.Background(), "vm1", sock, 300*time.Millisecond)
	if !vmerr.Is(err, vmerr.Timeout) || !strings.Contains(err.Error(), "no guest agent answered on org.qemu.guest_agent.0 within 300ms") {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}
