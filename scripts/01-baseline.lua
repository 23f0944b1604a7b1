-- 01-baseline.lua: split 1, reproduce with maximum visibility.
--
-- Answers: does the image under investigation show the symptoms — the
-- provisioning unit never writes its status file, the interface never
-- appears — and what do the unit's status and journal, networkd, the links
-- and addresses and the status file say? Every command is saved whole as an
-- artifact. Commands go over SSH when it answers (net=user, root's key) and
-- over the serial console when it does not.
--
-- Parameters (-a key=value):
--   cold=1   boot cold (default: restore the guest logged in from its warm state, saved by the first run)
--   iso=PATH | knobs="lab.storage=hang …"   what to boot (default: the lab's live.iso)
--   unit=pre-nixos.service  status=/run/pre-nixos/storage-status  iface=lan
--   net=user|lan   user networking with an SSH forward (default), or the vmscript LAN
--   ssh_key=PATH   the key SSH tries (default: the lab's key)
--   memory=1536M  boot_timeout=6m
-- Keep the VM open afterwards with `vmscript run --keep-open=always`.
-- Exit: 0 no symptom, 1 symptoms reproduced.

local inv = require "vmscript.investigation"
local p = inv.params(args)
local subject = inv.describe(p)
local net = args.net or "user"

notes.step("Baseline: boot " .. subject)
local l = net == "lan" and lan.new{ name = "lan" } or nil
local vm, sh = inv.boot(p, "subject", { net = l or "user", forwards = (not l) and { 22 } or nil })
local client
local key = args.ssh_key or p.img.ssh_key
if not l and key then
  local ok, c = pcall(function() return vm:ssh{ user = "root", key = key, timeout = "20s" } end)
  if ok then client = c else notes.observe("SSH did not answer within 20s: " .. tostring(c)) end
end
notes.step("Baseline: the diagnostic bundle")
local ctx = { p = p, subject = vm, sh = sh, lan = l }
ctx.bundle = inv.bundle(p, sh, "subject", client)
local verdict, ev = inv.probe_baseline(ctx)
print(string.format("bundle collected over %s: %d artifacts", ctx.bundle.channel, #ctx.bundle.artifacts))
print("baseline: " .. verdict .. " — " .. ev.text)
notes.observe("Baseline: " .. ev.text, { evidence = ev.files })
notes.conclude(verdict == "good" and "Baseline: no symptom" or ("Baseline: " .. ev.text))
print("notes: " .. notes.path())
vmscript.exit(verdict == "good" and 0 or 1)
