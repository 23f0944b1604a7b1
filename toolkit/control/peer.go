package control

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// Peer is the process at the other end of a unix socket, as the kernel
// saw it when it connected (SO_PEERCRED).
type Peer struct {
	PID int
	UID int
}

// peerOf returns the credentials of c's peer.
func peerOf(c *net.UnixConn) (Peer, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, serr
	}
	return Peer{PID: int(cred.Pid), UID: int(cred.Uid)}, nil
}

// checkPeer returns nil when peer is owner, else the refusal the peer is
// told: a run is its owner's alone, whatever the socket's mode would let
// in (root included).
func checkPeer(peer Peer, owner int, id string) error {
	if peer.UID == owner {
		return nil
	}
	return fmt.Errorf("refused: run %s belongs to %s; this connection comes from %s (pid %d). Only the run's owner may attach to it",
		id, userName(owner), userName(peer.UID), peer.PID)
}

// userName reads "uid 1000 (alice)", or "uid 1000" when the name is unknown.
func userName(uid int) string {
	s := "uid " + strconv.Itoa(uid)
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil && u.Username != "" {
		s += " (" + u.Username + ")"
	}
	return s
}

// owner is the uid a run's socket serves: the effective user of the process.
func owner() int { return os.Geteuid() }
