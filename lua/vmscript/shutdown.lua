--- Shutdown variants and their teardown logs (split 6, the harness).
---
--- Each variant is a command typed at the guest's root shell on the serial
--- console (`"systemctl poweroff --no-wall"`, `"poweroff"`, …) or `"acpi"`
--- (the ACPI power button, vm:powerdown). Each runs on its own VM: a fresh
--- boot from the caller's `boot` function, or a fork of a checkpoint (taken
--- at a shell prompt) when `checkpoint` is given. The console is captured
--- until QEMU exits or the deadline. Interactive prompts (`[y/N]`,
--- `Password:`, `Please enter`, `Press …`) are detected and never answered:
--- the prompt is reported and, after a short grace, the VM is stopped.
--- The teardown logs are normalised (kernel timestamps, dates, times, PIDs,
--- hex addresses stripped) and diffed against the first variant's.
---
--- ```lua
--- local shutdown = require "vmscript.shutdown"
--- local cp = vm:checkpoint{ continue = true }          -- vm at a root prompt
--- local r = shutdown.compare{ variants = { "systemctl poweroff --no-wall", "poweroff" },
---                             checkpoint = cp }
--- for _, rec in ipairs(r.records) do print(rec.variant, rec.outcome, rec.prompt) end
--- ```
---@class vmscript.shutdown
local shutdown = {}

--- The default prompt patterns (regexes, matched ANSI-stripped; $ is the end of
--- what has arrived so far, so a prompt waiting for input matches).
---@type {name: string, re: string}[]
shutdown.PROMPTS = {
  { name = "[y/N]", re = [[\[[yY]/[nN]\][ \t]*$]] },
  { name = "Password", re = [[(?i)password[^\n]{0,60}:[ \t]*$]] },
  { name = "Please enter", re = [[Please enter[^\n]*$]] },
  { name = "Press", re = [[\bPress (any key|Enter|ENTER|Ctrl|CTRL|RETURN|Return)[^\n]*$]] },
}

---@class vmscript.ShutdownOpts
---@field variants string[]? commands, or "acpi" (default {"systemctl poweroff --no-wall", "poweroff", "acpi"})
---@field boot (fun(variant: string, index: integer, name: string): vmscript.VM)? a fresh VM at a root shell prompt on its serial console
---@field checkpoint vmscript.Checkpoint? fork each variant from this (a VM saved at a root shell prompt)
---@field fork (fun(cp: vmscript.Checkpoint, name: string, index: integer): vmscript.VM)? how to fork (default cp:fork{name=})
---@field deadline duration? how long to wait for QEMU to exit (default "120s")
---@field grace duration? how long a prompt is left unanswered before the VM is stopped (default "5s")
---@field prompts {name: string, re: string}[]? default shutdown.PROMPTS
---@field name string? artifact and VM name prefix (default "shutdown")

---@class vmscript.ShutdownRecord
---@field variant string the variant as given
---@field command string what was sent ("ACPI power button" for acpi)
---@field vm string the VM's name
---@field outcome "exited"|"prompt"|"deadline" how it ended
---@field prompt string? the prompt's text, when one was detected
---@field prompt_kind string? which prompt pattern matched
---@field reason string QMP SHUTDOWN reason / exit reason ("guest-shutdown", "host-qmp-quit", …)
---@field code integer? QEMU's exit code
---@field seconds number from the command to QEMU's exit
---@field log string artifact: the raw teardown console lines
---@field normalised string artifact: the normalised teardown log
---@field timeline string artifact: the variant's events, one a line
---@field text string the normalised log itself

---@class vmscript.ShutdownResult
---@field records vmscript.ShutdownRecord[] one per variant, in order
---@field diffs {a: string, b: string, text: string, artifact: string, empty: boolean}[] first variant vs each other
---@field prompts string[] "variant: prompt" for every variant that prompted

--- Strip what differs from run to run in a console log: kernel timestamps,
--- dates, clock times, PIDs, hex addresses, durations of "after N ms".
---@param text string
---@return string
function shutdown.normalise(text)
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r", "")
    line = line:gsub("%[%s*%d+%.%d+%]%s?", "")                               -- [   12.345678]
    line = line:gsub("%d%d%d%d%-%d%d%-%d%d[T ]?", "")                        -- 2026-11-26
    line = line:gsub("%a%a%a %s?%d%d? %d%d:%d%d:%d%d", "")                   -- Nov 26 02:36:03
    line = line:gsub("%d%d:%d%d:%d%d[%.,]?%d*", "")                          -- 02:36:03.123
    line = line:gsub("0[xX]%x+", "0x")                                       -- 0xffff…
    line = line:gsub("%w+", function(w)                                      -- long hex words
      if #w >= 8 and w:match("^%x+$") and w:match("%d") then return "HEX" end
    end)
    line = line:gsub("([^%s%[])%[%d+%]", "%1[PID]")                          -- systemd[1234], (sd-remount)[221]
    line = line:gsub("([Pp][Ii][Dd][ =:]+)%d+", "%1N")                       -- pid 1234, PID=12
    line = (line .. " "):gsub("(%d[%d%.]*)(m?s)([^%w])", "N%2%3")             -- 123ms, 1.5s
    line = line:gsub("%s+$", "")
    if line ~= "" then out[#out + 1] = line end
  end
  return table.concat(out, "\n") .. (#out > 0 and "\n" or "")
end

--- The prompt patterns as console:expect alternatives.
---@param prompts {name: string, re: string}[]
---@return table
local function alternatives(prompts)
  local alts = {}
  for i, p in ipairs(prompts) do alts[i] = { re = p.re } end
  return alts
end

--- Stop a VM that is still running and return its exit status.
---@param vm vmscript.VM
---@return table
local function stop(vm)
  local ok = pcall(function() vm:quit() end)
  if not ok then pcall(function() vm:kill() end) end
  local okw, st = pcall(function() return vm:wait{ timeout = "30s" } end)
  if okw then return st end
  pcall(function() vm:kill() end)
  return { reason = "killed", code = -1 }
end

--- Run one variant on a VM already at a root shell prompt.
---@param vm vmscript.VM
---@param variant string
---@param o vmscript.ShutdownOpts
---@param name string
---@return vmscript.ShutdownRecord
function shutdown.run_one(vm, variant, o, name)
  local prompts = o.prompts or shutdown.PROMPTS
  local events = {}
  local t0 = time.now()
  local function event(fmt, ...)
    events[#events + 1] = string.format("+%7.2fs  " .. fmt, time.now() - t0, ...)
  end
  local rec = { variant = variant, vm = vm.name }
  local mark = vm.console:mark()
  if variant == "acpi" then
    rec.command = "ACPI power button"
    vm:powerdown()
  else
    rec.command = variant
    vm.console:sendline(variant)
  end
  event("sent: %s", rec.command)
  journal.event("shutdown.sent", { vm = vm.name, variant = variant })
  local ok, m = pcall(function()
    return vm.console:expect(alternatives(prompts), { timeout = o.deadline or "120s", from = mark })
  end)
  local st
  if ok then
    rec.outcome = "prompt"
    rec.prompt_kind = prompts[m.index].name
    -- the line the prompt is on, from what arrived after the command was
    -- sent: a shell prompt left on that line before the mark ("$ ") is not
    -- part of the question
    local line = ((m.before or "") .. m.text):match("([^\n]*)$")
    if line:match("^%s*$") then line = m.text end
    rec.prompt = line:gsub("\r", ""):gsub("^%s+", ""):gsub("%s+$", "")
    event("prompt detected (%s): %q — not answered", rec.prompt_kind, rec.prompt)
    journal.event("shutdown.prompt", { vm = vm.name, variant = variant, prompt = rec.prompt })
    -- (return values, not an assignment to st inside the closure: gopher-lua
    -- can detach a closure's upvalues after an error is caught, yuin/gopher-lua#448)
    local exited, s = pcall(function() return vm:wait{ timeout = o.grace or "5s" } end)
    if exited then
      st = s
      event("QEMU exited by itself during the grace period")
    else
      event("still running after the grace period: stopping the VM")
      st = stop(vm)
    end
  else
    local kind = type(m) == "table" and m.kind or nil
    if kind == "timeout" then
      rec.outcome = "deadline"
      event("deadline: QEMU still running, no prompt seen: stopping the VM")
      st = stop(vm)
    else
      -- the VM exited (or died) during the wait
      local okw, s = pcall(function() return vm:wait{ timeout = "30s" } end)
      if okw then
        rec.outcome = "exited"
        st = s
      else
        rec.outcome = "deadline"
        event("wait ended with %s; stopping the VM", tostring(m))
        st = stop(vm)
      end
    end
  end
  rec.reason = st.reason or "?"
  rec.code = st.code
  rec.seconds = time.now() - t0
  event("QEMU exited: reason %s, code %s", tostring(rec.reason), tostring(rec.code))
  local raw = table.concat(vm.console:lines{ from = mark }, "\n")
  local rest = vm.console:tail(1)
  if rest[1] and rest[1] ~= "" and not raw:find(rest[1], 1, true) then raw = raw .. "\n" .. rest[1] end
  rec.text = shutdown.normalise(raw)
  local base = (o.name or "shutdown") .. "-" .. name
  rec.log = notes.save(base .. ".teardown.log", raw .. "\n")
  rec.normalised = notes.save(base .. ".teardown.normalised.log", rec.text)
  rec.timeline = notes.save(base .. ".timeline.txt", table.concat({
    "variant: " .. variant, "command: " .. rec.command, "vm: " .. vm.name,
    "outcome: " .. rec.outcome, "prompt: " .. (rec.prompt or "-"),
    "shutdown reason: " .. tostring(rec.reason), "exit code: " .. tostring(rec.code), "",
  }, "\n") .. table.concat(events, "\n") .. "\n")
  notes.observe(string.format("`%s`: %s%s; QEMU exit reason %s, code %s after %.1fs", rec.command, rec.outcome,
    rec.prompt and (" — prompt " .. string.format("%q", rec.prompt) .. " left unanswered") or "",
    tostring(rec.reason), tostring(rec.code), rec.seconds), { evidence = { rec.timeline, rec.log } })
  return rec
end

--- A file-name-safe name for a variant.
---@param v string
---@return string
local function vname(v)
  return (v:gsub("%-%-[%w%-]+", ""):gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", ""))
end

--- Run every variant and diff the normalised teardown logs.
---@param o vmscript.ShutdownOpts
---@return vmscript.ShutdownResult
function shutdown.compare(o)
  o = o or {}
  local variants = o.variants or { "systemctl poweroff --no-wall", "poweroff", "acpi" }
  assert(o.boot or o.checkpoint, "shutdown.compare: needs boot= or checkpoint=")
  local res = { records = {}, diffs = {}, prompts = {} }
  local used = {}
  for i, v in ipairs(variants) do
    local n = vname(v)
    if n == "" or used[n] then n = n .. "-" .. i end
    used[n] = true
    local vmname = (o.name or "shutdown") .. "-" .. n
    local vm
    if o.checkpoint then
      vm = o.fork and o.fork(o.checkpoint, vmname, i) or o.checkpoint:fork{ name = vmname }
    else
      vm = o.boot(v, i, vmname)
    end
    local rec = shutdown.run_one(vm, v, o, n)
    rec.file_name = n
    res.records[i] = rec
    if rec.prompt then res.prompts[#res.prompts + 1] = v .. ": " .. rec.prompt end
  end
  local first = res.records[1]
  for i = 2, #res.records do
    local r = res.records[i]
    local text = diff.lines(first.text, r.text, { a_name = first.variant, b_name = r.variant })
    local art = notes.save(string.format("%s-diff-%s-vs-%s.diff", o.name or "shutdown", first.file_name, r.file_name),
      text ~= "" and text or "(no difference)\n")
    notes.observe(string.format("teardown diff `%s` vs `%s`: %s", first.variant, r.variant,
      text == "" and "identical after normalisation" or (select(2, text:gsub("\n", "")) .. " lines")), { evidence = art })
    res.diffs[#res.diffs + 1] = { a = first.variant, b = r.variant, text = text, artifact = art, empty = text == "" }
  end
  return res
end

return shutdown
