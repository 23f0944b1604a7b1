-- 04-network.lua: split 4, network vs downstream.
--
-- Answers: does the guest's interface get a lease, seen from both sides? On
-- the vmscript LAN the DHCP server shows whether the guest ever sent a
-- DISCOVER; in the guest, networkd's view of the interface, the links, what
-- pre-nixos' configure_lan said and the unit's environment (PRE_NIXOS_EXEC).
--
-- Parameters (-a key=value):
--   cold=1   boot cold (default: restore the guest logged in from its warm state, saved by the first run)
--   iso=PATH | knobs="lab.lan=mismatch"   what to boot (default: the lab's live.iso)
--   iface=lan  unit=pre-nixos.service  lease_timeout=30s  memory=1536M  boot_timeout=6m
-- Exit: 0 the interface holds a lease, 1 it does not, 125 cannot tell.

local inv = require "vmscript.investigation"
local p = inv.params(args)
local subject = inv.describe(p)

notes.step("Network: boot " .. subject .. " on the vmscript LAN")
local l = lan.new{ name = "lan" }
local ctx = { p = p, lan = l }
ctx.subject, ctx.sh = inv.boot(p, "subject", { net = l })
ctx.bundle = inv.bundle(p, ctx.sh, "subject")
ctx.health = inv.health(p, ctx.bundle)
notes.step("Network: server side and guest side")
local verdict, ev = inv.probe_network(ctx)
notes.observe("Verdict " .. verdict .. ": " .. ev.text, { evidence = ev.files })
if ev.conclusion then notes.conclude(ev.conclusion) end
print("network: " .. verdict .. " — " .. (ev.conclusion or ev.text))
print("notes: " .. notes.path())
vmscript.exit(({ good = 0, bad = 1, inconclusive = 125 })[verdict])
