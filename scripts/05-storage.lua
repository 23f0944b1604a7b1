-- 05-storage.lua: split 5, storage detection vs apply.
--
-- Answers: did the provisioning unit write its storage status? If not: does
-- detection work on its own (pre-nixos-detect-storage), what would the plan
-- do (pre-nixos --plan-only), and what does a dry run (PRE_NIXOS_EXEC=0) say?
--
-- Parameters (-a key=value):
--   cold=1   boot cold (default: restore the guest logged in from its warm state, saved by the first run)
--   iso=PATH | knobs="lab.storage=hang"   what to boot (default: the lab's live.iso)
--   unit=pre-nixos.service  status=/run/pre-nixos/storage-status  memory=1536M  boot_timeout=6m
-- Exit: 0 the status was written, 1 it was not.

local inv = require "vmscript.investigation"
local p = inv.params(args)
local subject = inv.describe(p)

notes.step("Storage: boot " .. subject)
local ctx = { p = p }
ctx.subject, ctx.sh = inv.boot(p, "subject", { net = "user" })
ctx.bundle = inv.bundle(p, ctx.sh, "subject")
ctx.health = inv.health(p, ctx.bundle)
notes.step("Storage: detection, plan, dry run")
local verdict, ev = inv.probe_storage(ctx)
notes.observe("Verdict " .. verdict .. ": " .. ev.text, { evidence = ev.files })
if ev.conclusion then notes.conclude(ev.conclusion) end
print("storage: " .. verdict .. " — " .. (ev.conclusion or ev.text))
print("notes: " .. notes.path())
vmscript.exit(verdict == "good" and 0 or 1)
