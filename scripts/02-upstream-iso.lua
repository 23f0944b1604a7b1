-- 02-upstream-iso.lua: split 2, host vs guest.
--
-- Answers: does a known-good image boot healthy under the very same harness
-- (memory, vmscript LAN and its DHCP server, serial login, the same bundle)?
-- If it does, the host and the harness are cleared and the fault is in the
-- image under investigation; if not, suspect the host or the harness.
--
-- Parameters (-a key=value):
--   cold=1   boot cold (default: restore the guest logged in from its warm state, saved by the first run)
--   good_iso=PATH  any known-good ISO (default: the lab's lab-good.iso);
--                  knobs=… instead boots the lab kernel with every knob clean
--   unit=pre-nixos.service  status=/run/pre-nixos/storage-status  iface=lan
--   memory=1536M  boot_timeout=6m  lease_timeout=30s
-- Exit: 0 healthy (good), 1 not.

local inv = require "vmscript.investigation"
local p = inv.params(args)
local _, good = inv.describe(p)

notes.step("Host vs guest: boot the known-good image " .. good .. " with the same harness")
local l = lan.new{ name = "lan" }
local ctx = { p = p, lan = l }
ctx.good, ctx.good_shell = inv.boot(p, "good", { net = l })
local verdict, ev = inv.probe_host_vs_guest(ctx)
notes.observe("Verdict " .. verdict .. ": " .. ev.text, { evidence = ev.files })
if verdict == "good" then
  notes.conclude("Host vs guest: the known-good image is healthy under this harness; the fault is in the image under investigation")
else
  notes.conclude("Host vs guest: the known-good image fails too; suspect the host or the harness")
end
print("host-vs-guest: " .. verdict .. " — " .. ev.text)
print("notes: " .. notes.path())
vmscript.exit(verdict == "good" and 0 or 1)
