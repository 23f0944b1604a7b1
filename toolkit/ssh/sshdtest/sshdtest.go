// Package sshdtest starts a throwaway OpenSSH sshd on 127.0.0.1 for tests
// and benchmarks: its own configuration, host key and authorized_keys in a
// temporary directory, a free port, run in the foreground (-D -e) as a child
// of the caller. It needs /usr/sbin/sshd (Debian package openssh-server).
package sshdtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// Binary is the sshd that Start runs.
const Binary = "/usr/sbin/sshd"

// SFTPServer is the sftp-server binary of Debian's openssh-server.
const SFTPServer = "/usr/lib/openssh/sftp-server"

// Options configure the server.
type Options struct {
	// NoSFTP leaves the sftp Subsystem out of the configuration.
	NoSFTP bool
	// Extra lines appended to sshd_config.
	Extra []string
}

// Server is a running sshd.
type Server struct {
	// Host and Port are where it listens (127.0.0.1 only).
	Host string
	Port int
	// Dir holds its configuration, keys and log.
	Dir string
	// HostKey is the server's public host key as an authorized_keys line.
	HostKey string
	// ClientKey is a private key file that the server accepts for the
	// current user; ClientKeyPEM is its content.
	ClientKey    string
	ClientKeyPEM []byte
	// User is the user the server runs as and accepts logins for.
	User string

	cmd  *exec.Cmd
	log  *lockedBuf
	done chan struct{}
	once sync.Once
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Available reports whether sshd is installed.
func Available() bool {
	_, err := os.Stat(Binary)
	return err == nil
}

// NewKey returns a fresh ed25519 private key in OpenSSH format and its
// public key as an authorized_keys line.
func NewKey() (priv []byte, pub string, err error) {
	pk, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	block, err := gossh.MarshalPrivateKey(sk, "vmscript-test")
	if err != nil {
		return nil, "", err
	}
	spub, err := gossh.NewPublicKey(pk)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(block), strings.TrimSpace(string(gossh.MarshalAuthorizedKey(spub))), nil
}

// Start runs sshd in dir (a fresh temporary directory the caller removes)
// and returns once it accepts connections.
func Start(ctx context.Context, dir string, opt Options) (*Server, error) {
	if !Available() {
		return nil, fmt.Errorf("%s is missing (apt-get install openssh-server)", Binary)
	}
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation
		// directory; Debian creates it only when the service starts.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return nil, err
		}
	}
	hostPriv, hostPub, err := NewKey()
	if err != nil {
		return nil, err
	}
	clientPriv, clientPub, err := NewKey()
	if err != nil {
		return nil, err
	}
	s := &Server{Host: "127.0.0.1", Dir: dir, HostKey: hostPub, ClientKeyPEM: clientPriv,
		ClientKey: filepath.Join(dir, "client_key"), log: &lockedBuf{}, done: make(chan struct{})}
	if u := os.Getenv("USER"); u != "" {
		s.User = u
	}
	if os.Geteuid() == 0 {
		s.User = "root"
	}
	files := map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"host_key":        {hostPriv, 0o600},
		"host_key.pub":    {[]byte(hostPub + "\n"), 0o644},
		"client_key":      {clientPriv, 0o600},
		"client_key.pub":  {[]byte(clientPub + "\n"), 0o644},
		"authorized_keys": {[]byte(clientPub + "\n"), 0o600},
	}
	for name, f := range files {
		if err := os.WriteFile(filepath.Join(dir, name), f.data, f.mode); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Port = port
		err = s.start(ctx, opt)
		if err == nil {
			return s, nil
		}
		if attempt >= 3 || !strings.Contains(s.log.String(), "Address already in use") {
			return nil, err
		}
	}
}

func (s *Server) start(ctx context.Context, opt Options) error {
	cfg := []string{
		fmt.Sprintf("ListenAddress 127.0.0.1:%d", s.Port),
		"HostKey " + filepath.Join(s.Dir, "host_key"),
		"AuthorizedKeysFile " + filepath.Join(s.Dir, "authorized_keys"),
		"PidFile none",
		"StrictModes no",
		"PermitRootLogin yes",
		"PubkeyAuthentication yes",
		"PasswordAuthentication yes",
		"KbdInteractiveAuthentication yes",
		"UsePAM no",
		"AcceptEnv *",
		"MaxSessions 50",
		"MaxStartups 50",
		"LogLevel VERBOSE",
		"PrintMotd no",
		"PrintLastLog no",
		"UseDNS no",
	}
	if !opt.NoSFTP {
		cfg = append(cfg, "Subsystem sftp "+SFTPServer)
	}
	cfg = append(cfg, opt.Extra...)
	cfgPath := filepath.Join(s.Dir, "sshd_config")
	if err := os.WriteFile(cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	s.log = &lockedBuf{}
	s.done = make(chan struct{})
	cmd := exec.Command(Binary, "-D", "-e", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = s.log, s.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(s.Host, fmt.Sprint(s.Port)), time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("sshd exited at start: %s", s.log.String())
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Close()
			return fmt.Errorf("sshd did not listen on %d within 15s: %s", s.Port, s.log.String())
		}
	}
}

// Log returns what sshd printed (it logs to stderr with -e).
func (s *Server) Log() string { return s.log.String() }

// Close stops sshd (its process group: the listener and any session
// children it forked) and waits for it.
func (s *Server) Close() error {
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
				<-s.done
			}
		}
	})
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("unexpected address " + l.Addr().String())
	}
	return addr.Port, nil
}
