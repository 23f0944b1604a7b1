package ssh

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmscript/vmscript/toolkit/vmerr"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Host key policies for Config.HostKey. Anything else is a pinned key.
const (
	// AcceptNew records an unknown host's key in Config.KnownHostsPath and
	// refuses a key that differs from the one recorded (like OpenSSH's
	// StrictHostKeyChecking=accept-new). It is the default.
	AcceptNew = "accept-new"
	// Insecure accepts any host key and records nothing.
	Insecure = "insecure"
)

// hostKeyError is what a host key callback returns on a mismatch; Dial turns
// it into kind "refused".
type hostKeyError struct {
	addr string
	got  string
	want []string
	file string
}

func (e *hostKeyError) Error() string {
	msg := fmt.Sprintf("host key of %s does not match: server offered %s, expected %s", e.addr, e.got, strings.Join(e.want, " or "))
	if e.file != "" {
		msg += " (recorded in " + e.file + ")"
	}
	return msg
}

// knownHostsMu serializes reads and appends of known_hosts files within this
// process (two clients of one run share the run's file).
var knownHostsMu sync.Mutex

// hostKeyCallback builds the callback for cfg.HostKey. It returns a usage
// error for a pinned key that does not parse.
func hostKeyCallback(cfg *Config) (gossh.HostKeyCallback, []string, error) {
	switch policy := strings.TrimSpace(cfg.HostKey); policy {
	case Insecure:
		return gossh.InsecureIgnoreHostKey(), defaultHostKeyAlgos, nil
	case "", AcceptNew:
		if cfg.KnownHostsPath == "" {
			return acceptNewMemory(), defaultHostKeyAlgos, nil
		}
		return acceptNewFile(cfg.KnownHostsPath), defaultHostKeyAlgos, nil
	default:
		pins, algos, err := parsePins(policy)
		if err != nil {
			return nil, nil, err
		}
		return func(hostname string, remote net.Addr, key gossh.PublicKey) error {
			fp := gossh.FingerprintSHA256(key)
			var want []string
			for _, p := range pins {
				if p.key != nil && bytes.Equal(p.key.Marshal(), key.Marshal()) {
					return nil
				}
				if p.fingerprint != "" && p.fingerprint == fp {
					return nil
				}
				if p.key != nil {
					want = append(want, p.key.Type()+" "+gossh.FingerprintSHA256(p.key))
				} else {
					want = append(want, p.fingerprint)
				}
			}
			return &hostKeyError{addr: hostname, got: key.Type() + " " + fp, want: want}
		}, algos, nil
	}
}

// defaultHostKeyAlgos is the host key preference when no key is pinned:
// ed25519 first. x/crypto's own default puts rsa-sha2-256 before
// ssh-ed25519, and dropbear 2022.83 (Debian 12, the mini lab) with only an
// ed25519 host key then drops the connection during key exchange (the
// client sees "handshake failed: EOF"). Certificates are left out: nothing
// here verifies them.
var defaultHostKeyAlgos = []string{
	gossh.KeyAlgoED25519,
	gossh.KeyAlgoECDSA256, gossh.KeyAlgoECDSA384, gossh.KeyAlgoECDSA521,
	gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA,
}

type pin struct {
	key         gossh.PublicKey
	fingerprint string
}

// parsePins reads one or more pinned keys: authorized_keys lines
// ("ssh-ed25519 AAAA… comment"), known_hosts lines ("host ssh-ed25519 AAAA…")
// or SHA256 fingerprints ("SHA256:…"), one per line. It also returns the
// key algorithms to ask the server for, so a server with several host keys
// offers the pinned one.
func parsePins(s string) ([]pin, []string, error) {
	var pins []pin
	var algos []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "SHA256:") {
			pins = append(pins, pin{fingerprint: strings.Fields(line)[0]})
			continue
		}
		key, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			// A known_hosts line: skip the host pattern.
			if f := strings.Fields(line); len(f) >= 3 {
				key, _, _, _, err = gossh.ParseAuthorizedKey([]byte(strings.Join(f[1:], " ")))
			}
		}
		if err != nil {
			return nil, nil, vmerr.Wrap(vmerr.Usage, err, "ssh: host_key %q is neither \"accept-new\", \"insecure\", a public key line nor a SHA256 fingerprint", abbreviate(line, 60))
		}
		pins = append(pins, pin{key: key})
		algos = append(algos, algosFor(key.Type())...)
	}
	if len(pins) == 0 {
		return nil, nil, vmerr.New(vmerr.Usage, "ssh: host_key is empty")
	}
	for _, p := range pins {
		if p.key == nil { // a fingerprint can be any algorithm
			return pins, defaultHostKeyAlgos, nil
		}
	}
	return pins, algos, nil
}

// algosFor maps a key type to the host key algorithms that use it (an RSA
// key signs with rsa-sha2-*).
func algosFor(keyType string) []string {
	if keyType == gossh.KeyAlgoRSA {
		return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256, gossh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// acceptNewMemory accepts the first key seen per address and refuses a
// different one later (no file).
func acceptNewMemory() gossh.HostKeyCallback {
	var mu sync.Mutex
	seen := map[string]gossh.PublicKey{}
	return func(hostname string, remote net.Addr, key gossh.PublicKey) error {
		mu.Lock()
		defer mu.Unlock()
		if k, ok := seen[hostname]; ok {
			if !bytes.Equal(k.Marshal(), key.Marshal()) && k.Type() == key.Type() {
				return &hostKeyError{addr: hostname, got: key.Type() + " " + gossh.FingerprintSHA256(key),
					want: []string{k.Type() + " " + gossh.FingerprintSHA256(k)}}
			}
			return nil
		}
		seen[hostname] = key
		return nil
	}
}

// acceptNewFile checks the key against path and appends it when the host is
// unknown.
func acceptNewFile(path string) gossh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key gossh.PublicKey) error {
		knownHostsMu.Lock()
		defer knownHostsMu.Unlock()
		if _, err := os.Stat(path); err == nil {
			cb, err := knownhosts.New(path)
			if err != nil {
				return vmerr.Wrap(vmerr.IO, err, "ssh: reading known hosts %s", path)
			}
			err = cb(hostname, remote, key)
			if err == nil {
				return nil
			}
			var ke *knownhosts.KeyError
			if !errors.As(err, &ke) {
				return err
			}
			if len(ke.Want) > 0 {
				he := &hostKeyError{addr: hostname, got: key.Type() + " " + gossh.FingerprintSHA256(key), file: path}
				for _, w := range ke.Want {
					he.want = append(he.want, fmt.Sprintf("%s %s (line %d)", w.Key.Type(), gossh.FingerprintSHA256(w.Key), w.Line))
				}
				return he
			}
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return vmerr.Wrap(vmerr.IO, err, "ssh: known hosts")
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return vmerr.Wrap(vmerr.IO, err, "ssh: known hosts")
		}
		defer f.Close()
		if _, err := f.WriteString(knownhosts.Line([]string{knownhosts.Normalize(hostname)}, key) + "\n"); err != nil {
			return vmerr.Wrap(vmerr.IO, err, "ssh: known hosts")
		}
		return nil
	}
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
