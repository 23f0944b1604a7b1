-- investigate.lua: the whole half-splitting plan, from "does it reproduce?"
-- to a conclusion, every decision written down with its evidence.
--
-- Answers: why does the installer image hang in pre-nixos.service, get no
-- lease on `lan`, and ask before powering off — and is it the host, the
-- harness, the build or the guest's runtime (network, storage, shutdown)?
--
-- The tree (vmscript.split; each node's verdict picks the next question):
--   1 baseline        boot the image, collect the bundle: do the symptoms show?
--   2 host vs guest   the known-good image under the same harness: healthy?
--                       bad -> stop: suspect the host or the harness
--   3 build vs runtime  inspect the ISO (key, unit, network config) before boot
--                       bad -> stop: the build lacks an asset
--   4 network         lease on the vmscript LAN (server side), `lan`, configure_lan
--   5 storage         the status file; pre-nixos-detect-storage, --plan-only, PRE_NIXOS_EXEC=0
--   6 harness         sudo, then `systemctl poweroff --no-wall` vs `poweroff`
--                     from forks of one checkpoint, prompts named, teardown diff
-- Exit code for `git bisect run`: 0 every split good, 1 a split is bad,
-- 125 inconclusive.
--
-- Parameters (-a key=value): see lua/vmscript/investigation.lua —
--   iso=PATH (default live.iso; via=entry|menu|screen, firmware=bios|uefi) or knobs="lab.storage=hang …" (direct lab boot),
--   good_iso=PATH, unit=pre-nixos.service, status=/run/pre-nixos/storage-status,
--   iface=lan, key=pre_nixos/root_key.pub, memory=1536M, boot_timeout=6m,
--   lease_timeout=30s, variants="systemctl poweroff --no-wall;poweroff", deadline=120s,
--   report=only (exit 0 after a complete walk, for the demo),
--   cold=1 (boot both guests cold instead of restoring their warm states)

local split = require "vmscript.split"
local inv = require "vmscript.investigation"

local p = inv.params(args)
local subject, good = inv.describe(p)

notes.step("Setup")
notes.observe(string.format("Under investigation: %s. Known-good: %s. Unit %s, status file %s, interface %s.",
  subject, good, p.unit, p.status, p.iface))

-- One vmscript LAN for both guests: its DHCP server shows what each one asks.
local l = lan.new{ name = "lan" }
local ctx = { p = p, lan = l }
if p.cold then
  -- Both guests boot at once; each is recorded from byte 0 while we wait on the other.
  ctx.subject = inv.start(p, "subject", { net = l })
  ctx.good = inv.start(p, "good", { net = l })
else
  -- Each restored from its warm state (booted, logged in and saved the first time).
  ctx.subject, ctx.sh = inv.boot(p, "subject", { net = l })
  ctx.good, ctx.good_shell = inv.boot(p, "good", { net = l })
end

local harness = {
  name = "harness", question = "Harness: do sudo and the shutdown paths work without interaction?",
  probe = inv.probe_harness,
}
local storage = {
  name = "storage", question = "Storage: did storage detection write " .. p.status .. "?",
  probe = inv.probe_storage,
  branches = { good = harness, bad = harness, inconclusive = harness },
}
local network = {
  name = "network", question = "Network: does `" .. p.iface .. "` get a lease from the harness's DHCP server?",
  probe = inv.probe_network,
  branches = { good = storage, bad = storage, inconclusive = storage },
}
local build = {
  name = "build-vs-runtime", question = "Build vs runtime: does the ISO carry the key, the unit and the network config?",
  probe = inv.probe_build,
  conclusion_good = "Build vs runtime: the image carries its assets; the fault is at runtime",
  branches = { good = network, inconclusive = network },
}
local host = {
  name = "host-vs-guest", question = "Host vs guest: is the known-good image healthy under the same harness?",
  probe = inv.probe_host_vs_guest,
  conclusion_good = "Host vs guest: the known-good image is healthy under the same harness; host and harness are cleared, the fault is in the guest image",
  conclusion_bad = "Host vs guest: the known-good image fails under the same harness too; suspect the host or the harness, not the image",
  branches = { good = build, inconclusive = build },
}
local baseline = {
  name = "baseline", question = "Baseline: does the image under investigation show the symptoms?",
  probe = inv.probe_baseline,
  conclusion_good = "Baseline: no symptom — the unit wrote its status and the interface exists",
  conclusion_bad = function(_, ev) return "Baseline: " .. (ev.text or "symptoms reproduced") end,
  branches = { good = host, bad = host, inconclusive = host },
}

local result = split.run(baseline, ctx, { title = "investigate" })
print("notes: " .. notes.path())
-- `-a report=only` (the demo) ends with 0 once the tree has been walked,
-- whatever it found; otherwise the exit code is for `git bisect run`.
if args.report ~= "only" then
  split.exit(result)
end
