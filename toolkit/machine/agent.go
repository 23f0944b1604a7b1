package machine

import (
	"context"
	"time"

	"github.com/vmscript/vmscript/toolkit/agent"
	"github.com/vmscript/vmscript/toolkit/command"
	"github.com/vmscript/vmscript/toolkit/shell"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// Agent connects to the guest's qemu-guest-agent within syncTimeout (0:
// agent.DefaultSyncTimeout). A machine started without the agent's port
// fails at once; one whose guest runs no agent fails at the timeout, saying
// so.
//
// The port takes one connection at a time, so the machine keeps the
// session and hands every caller the same one (its requests go one at a
// time); after Close the next call connects again. Stop closes it.
func (m *Machine) Agent(ctx context.Context, syncTimeout time.Duration) (*agent.Client, error) {
	sock := m.VM.AgentSocket()
	if sock == "" {
		return nil, vmerr.New(vmerr.Usage, "%s has no guest agent port: start it with agent = true (the systemd lab's guests have one)", m.Name()).With("vm", m.Name())
	}
	m.agentMu.Lock()
	defer m.agentMu.Unlock()
	if m.agent != nil && !m.agent.Closed() {
		return m.agent, nil
	}
	c, err := agent.Dial(ctx, m.Name(), sock, syncTimeout)
	if err != nil {
		return nil, err
	}
	m.agent = c
	if m.run != nil {
		m.run.Event("vm:"+m.Name(), "agent-connect", map[string]any{"socket": sock})
	}
	return c, nil
}

// RunnerOptions say how Runner may reach the guest.
type RunnerOptions struct {
	// AgentTimeout bounds the wait for the guest agent (0: agent's default).
	AgentTimeout time.Duration
	// SSH, when set, is tried after the agent (a bounded wait: set its
	// Config.WaitTimeout).
	SSH *SSHOptions
	// Shell is how the serial shell is taken over, the last resort.
	Shell shell.Options
}

// Runner returns the first command channel that works — the guest agent
// (when the VM has its port), SSH (when opt.SSH is set), the serial shell
// — with its name ("agent", "ssh", "serial") and why each one before it
// was passed over.
func (m *Machine) Runner(ctx context.Context, opt RunnerOptions) (command.Runner, []string, error) {
	var passed []string
	if m.VM.AgentSocket() != "" {
		a, err := m.Agent(ctx, opt.AgentTimeout)
		if err == nil {
			return a, passed, nil
		}
		passed = append(passed, "agent: "+err.Error())
	} else {
		passed = append(passed, "agent: no guest agent port (agent = true starts one)")
	}
	if opt.SSH != nil {
		c, err := m.SSH(ctx, *opt.SSH)
		if err == nil {
			return c, passed, nil
		}
		passed = append(passed, "ssh: "+err.Error())
	} else {
		passed = append(passed, "ssh: not asked for (no ssh options)")
	}
	sh, err := m.Shell(ctx, opt.Shell)
	if err != nil {
		return nil, passed, err
	}
	return sh, passed, nil
}

// closeAgent ends the machine's agent session, if any.
func (m *Machine) closeAgent() {
	m.agentMu.Lock()
	defer m.agentMu.Unlock()
	if m.agent != nil {
		m.agent.Close()
		m.agent = nil
	}
}
