--- The diagnostic bundle of split 1: the provisioning unit's status and
--- journal, the network's state, the links and addresses, and named files.
--- Every command is saved whole as an artifact and recorded in the notes
--- (command, exit code, excerpt, link). Commands go over SSH when a client is
--- given and answers, and over the serial shell otherwise (or when SSH stops
--- answering half-way), so the bundle is collected even from a guest whose
--- network never came up.
---
--- ```lua
--- local collect = require "vmscript.collect"
--- local b = collect.bundle{ shell = sh, ssh = client, unit = "pre-nixos.service",
---                           iface = "lan", files = { "/run/pre-nixos/storage-status" } }
--- if b.files["/run/pre-nixos/storage-status"].code ~= 0 then … end
--- ```
---@class vmscript.collect
local collect = {}

---@class vmscript.CollectOpts
---@field shell vmscript.Shell? the serial command channel (from vm:login / vm:shell)
---@field ssh vmscript.SSHClient? an SSH client; used first when it answers
---@field unit string? the unit to report on (default "pre-nixos.service")
---@field iface string|false? the interface for networkctl status (default "lan"; false: all)
---@field files string[]? guest files to read (cat)
---@field extra table<string, string>? more commands, by key
---@field prefix string? artifact name prefix (default "collect")
---@field timeout duration? per command (default "60s")
---@field ssh_timeout duration? bound of the SSH probe (default "10s")

---@class vmscript.CollectResult
---@field cmd string the command as run
---@field output string stdout and stderr (SSH) or the console output (serial)
---@field code integer the exit code (-1 when neither channel could run it)
---@field channel "ssh"|"serial"|"none"
---@field artifact string? the absolute path of the saved output
---@field error string? why the command could not be run

---@class vmscript.Bundle
---@field status vmscript.CollectResult systemctl status UNIT
---@field journal vmscript.CollectResult journalctl -u UNIT -b
---@field networkctl vmscript.CollectResult networkctl status [IFACE]
---@field links vmscript.CollectResult ip -o link
---@field addr vmscript.CollectResult ip -4 addr
---@field files table<string, vmscript.CollectResult> by guest path
---@field extra table<string, vmscript.CollectResult> by key
---@field channel "ssh"|"serial"|"none" the channel the bundle started on
---@field artifacts string[] every saved artifact, in order

--- A file-name-safe slug of a string.
---@param s string
---@return string
local function slug(s)
  s = s:gsub("^/+", ""):gsub("[^%w%.%-]+", "-"):gsub("%-+", "-")
  return s:sub(1, 60)
end

--- Whether an SSH client answers a trivial command.
---@param client vmscript.SSHClient
---@param timeout duration
---@return boolean ok, string? why
local function ssh_answers(client, timeout)
  local ok, r = pcall(client.test, client, "true", { timeout = timeout })
  if not ok then return false, tostring(r) end
  return r, not r and "`true` failed" or nil
end

--- Run one command over a channel (the shell and the SSH client share one
--- command interface: `output` is what the command printed); raises on
--- channel failure.
---@param channel "ssh"|"serial"
---@param o vmscript.CollectOpts
---@param cmd string
---@return string output, integer code
local function run_on(channel, o, cmd)
  local client = channel == "ssh" and o.ssh or o.shell
  local r = client:run(cmd, { timeout = o.timeout or "60s" })
  return r.output, r.code
end

--- Run a single command on the best channel and record it.
--- The state of `chan` ({name=}) is shared across calls: once SSH fails the
--- rest go over the serial shell.
---@param o vmscript.CollectOpts
---@param chan {name: string}
---@param key string the artifact's name part
---@param cmd string
---@return vmscript.CollectResult
local function one(o, chan, key, cmd)
  local res = { cmd = cmd, output = "", code = -1, channel = "none" }
  while chan.name ~= "none" do
    local ok, out, code = pcall(run_on, chan.name, o, cmd)
    if ok then
      res.output, res.code, res.channel = out, code, chan.name
      break
    end
    res.error = tostring(out)
    if chan.name == "ssh" and o.shell then
      notes.observe(string.format("SSH failed on `%s` (%s); continuing on the serial shell", cmd, res.error))
      chan.name = "serial"
    else
      break
    end
  end
  if res.channel == "none" then
    notes.observe(string.format("could not run `%s`: %s", cmd, res.error or "no channel"))
    return res
  end
  local name = string.format("%s-%s.txt", o.prefix or "collect", slug(key))
  res.artifact = notes.save(name, string.format("$ %s\n# channel: %s, exit %d\n%s", cmd, res.channel, res.code, res.output))
  notes.command(cmd .. "   [" .. res.channel .. "]", { output = res.output, code = res.code, artifact = res.artifact })
  return res
end

--- Collect the bundle. At least one of `shell` and `ssh` must be given.
---@param o vmscript.CollectOpts
---@return vmscript.Bundle
function collect.bundle(o)
  assert(o and (o.shell or o.ssh), "collect.bundle: needs shell= or ssh=")
  local unit = o.unit or "pre-nixos.service"
  local iface = o.iface
  if iface == nil then iface = "lan" end
  local chan = { name = "none" }
  if o.ssh then
    local ok, why = ssh_answers(o.ssh, o.ssh_timeout or "10s")
    if ok then
      chan.name = "ssh"
    else
      notes.observe("SSH does not answer (" .. tostring(why) .. ")" .. (o.shell and "; collecting over the serial shell" or ""))
    end
  end
  if chan.name == "none" and o.shell then chan.name = "serial" end
  local b = { files = {}, extra = {}, channel = chan.name, artifacts = {} }
  local function add(r)
    if r.artifact then b.artifacts[#b.artifacts + 1] = r.artifact end
    return r
  end
  b.status = add(one(o, chan, "systemctl-status-" .. unit, "systemctl status --no-pager --full " .. unit))
  b.journal = add(one(o, chan, "journal-" .. unit, "journalctl --no-pager -b -u " .. unit))
  b.networkctl = add(one(o, chan, "networkctl-status" .. (iface and ("-" .. iface) or ""),
    "networkctl status --no-pager" .. (iface and (" " .. iface) or "")))
  b.links = add(one(o, chan, "ip-o-link", "ip -o link"))
  b.addr = add(one(o, chan, "ip-4-addr", "ip -4 addr"))
  for _, f in ipairs(o.files or {}) do
    b.files[f] = add(one(o, chan, "file-" .. f, "cat " .. f))
  end
  local keys = {}
  for k in pairs(o.extra or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    b.extra[k] = add(one(o, chan, k, o.extra[k]))
  end
  return b
end

--- Run and record one command on the best channel (the same rules as the
--- bundle), e.g. for a follow-up question.
---@param o vmscript.CollectOpts
---@param key string artifact name part
---@param cmd string
---@return vmscript.CollectResult
function collect.command(o, key, cmd)
  local chan = { name = o.ssh and "ssh" or (o.shell and "serial" or "none") }
  return one(o, chan, key, cmd)
end

--- The interface names of `ip -o link` output (without lo).
---@param output string
---@return string[]
function collect.interfaces(output)
  local names = {}
  for name in output:gmatch("%d+:%s+([%w%.%-_@]+):") do
    name = name:gsub("@.*", "")
    if name ~= "lo" then names[#names + 1] = name end
  end
  return names
end

return collect
