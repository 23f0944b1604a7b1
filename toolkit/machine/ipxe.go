package machine

import (
	"context"
	"time"

	"github.com/vmscript/vmscript/toolkit/console"
)

// IPXEPrompt is the prompt iPXE shows before it boots, for BANNER_TIMEOUT
// (2 s in Debian's ipxe-qemu ROMs): Ctrl-B opens its shell, any other key
// ends the wait at once.
const IPXEPrompt = "Press Ctrl-B for the iPXE command line..."

// ipxePromptWindow bounds how long after the start a machine looks for the
// prompt: the firmware runs iPXE within its first seconds (0.2 s under
// TCG), or after the disks' boot failed.
const ipxePromptWindow = 2 * time.Minute

// answerIPXEPrompt presses a space at iPXE's prompt, once, so a network
// boot does not wait out the prompt's 2 s (measured: the Debian installer
// over iPXE+HTTP reached its init 1.9 s sooner). It runs beside the
// script's own waits without moving where they start, and ends with the
// console or after ipxePromptWindow.
func (m *Machine) answerIPXEPrompt() {
	ctx, cancel := context.WithTimeout(context.Background(), ipxePromptWindow)
	defer cancel()
	from := m.Console.StartMark()
	_, err := m.Console.Expect(ctx, []console.Pattern{{Text: IPXEPrompt}}, console.ExpectOptions{
		Timeout: ipxePromptWindow, From: &from, Bystander: true, Quiet: true,
	})
	if err != nil {
		return
	}
	if m.Console.Send(ctx, " ") == nil && m.run != nil {
		m.run.Event("vm:"+m.Name(), "ipxe-prompt", map[string]any{
			"answered": "space", "why": "iPXE's Ctrl-B prompt would wait 2 s; Spec.KeepIPXEPrompt (qemu.start{ipxe_prompt = true}) keeps it",
		})
	}
}
