package qemu

import (
	"context"

	"github.com/vmscript/vmscript/toolkit/hostmem"
)

// MemoryOverhead is what a VM is counted for beyond its guest memory in the
// host's ledger: QEMU's own (device models, TCG's translation cache, the
// migration buffers of a checkpoint).
const MemoryOverhead = 128 << 20

// reserveMemory holds the VM's memory in the host's ledger (hostmem)
// before QEMU starts: when the VMs of every vmscript process on the host
// leave no room it waits for its turn, saying so in the timeline
// (vm:NAME memory-wait), or fails naming who holds what.
func reserveMemory(ctx context.Context, cfg Config) (*hostmem.Reservation, error) {
	ledger, err := hostmem.Host()
	if err != nil {
		return nil, err
	}
	mib, err := ParseMemory(cfg.Memory)
	if err != nil {
		return nil, usage("memory", "%v", err)
	}
	who := "vm " + cfg.Name
	if cfg.Run != nil {
		who += " of run " + cfg.Run.Dir()
	}
	bytes := int64(mib)<<20 + MemoryOverhead
	return ledger.Reserve(ctx, who, bytes, func(held []hostmem.Holder, budget int64) {
		var sum int64
		for _, h := range held {
			sum += h.Bytes
		}
		if cfg.Run != nil {
			cfg.Run.Event("vm:"+cfg.Name, "memory-wait", map[string]any{
				"needed_bytes": bytes, "held_bytes": sum, "budget_bytes": budget, "holders": len(held),
			})
		}
	})
}
