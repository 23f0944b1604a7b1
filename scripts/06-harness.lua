-- 06-harness.lua: split 6, the harness.
--
-- Answers: does the automation log in, can the sudo user escalate, and do
-- the shutdown paths power the guest off without interaction? Runs each
-- shutdown variant from a fork of one checkpoint taken at the root prompt
-- (or from a fresh boot each, fresh=1), captures the console until QEMU
-- exits, names any prompt ([y/N], Password, Please enter, Press …) without
-- answering it, and diffs the normalised teardown logs.
--
-- Parameters (-a key=value):
--   cold=1   boot cold (default: restore the guest logged in from its warm state, saved by the first run)
--   iso=PATH | knobs="lab.shutdown=confirm"   what to boot (default: the lab's live.iso)
--   variants="systemctl poweroff --no-wall;poweroff"   (";"-separated; "acpi" = power button)
--   fresh=1        a fresh boot per variant instead of checkpoint forks
--   deadline=120s  per variant; sudo_user=nixos sudo_password=nixos memory=1536M
-- Exit: 0 every variant powered off by itself, 1 otherwise.

local inv = require "vmscript.investigation"
local shutdown = require "vmscript.shutdown"
local p = inv.params(args)
local subject = inv.describe(p)

notes.step("Harness: boot " .. subject .. " and log in")
local l = lan.new{ name = "lan" }
local ctx = { p = p, lan = l }
ctx.subject, ctx.sh = inv.boot(p, "subject", { net = l })
notes.step("Harness: sudo and shutdown variants")
local verdict, ev
if args.fresh == "1" then
  ctx.subject:quit()
  local res = shutdown.compare{ variants = p.variants, deadline = p.deadline, name = "shutdown",
    boot = function(_, _, name)
      local vm = inv.start(p, "subject", { name = name, net = l })
      inv.login(p, vm)
      return vm
    end }
  ctx.shutdown = res
  local bad = #res.prompts > 0
  for _, r in ipairs(res.records) do bad = bad or r.outcome ~= "exited" end
  verdict = bad and "bad" or "good"
  ev = { text = #res.prompts > 0 and ("prompts: " .. table.concat(res.prompts, "; ")) or "no prompt", files = {} }
  for _, d in ipairs(res.diffs) do ev.files[#ev.files + 1] = d.artifact end
else
  verdict, ev = inv.probe_harness(ctx)
end
notes.observe("Verdict " .. verdict .. ": " .. ev.text, { evidence = ev.files })
if ev.conclusion then notes.conclude(ev.conclusion) end
for _, r in ipairs(ctx.shutdown.records) do
  print(string.format("variant %q: %s, reason %s, code %s%s", r.command, r.outcome, tostring(r.reason),
    tostring(r.code), r.prompt and (", prompt " .. string.format("%q", r.prompt)) or ""))
end
for _, d in ipairs(ctx.shutdown.diffs) do
  print(string.format("diff %q vs %q: %s (%s)", d.a, d.b, d.empty and "empty" or "non-empty", d.artifact))
end
print("harness: " .. verdict .. " — " .. (ev.conclusion or ev.text))
print("notes: " .. notes.path())
vmscript.exit(verdict == "good" and 0 or 1)
