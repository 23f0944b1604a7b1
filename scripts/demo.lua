-- demo.lua: the first two splits of the investigation, on the lab guest.
--
-- Question: why does the installer ISO hang in pre-nixos.service and never
-- get a lease on `lan`? Split 1 reproduces with maximum visibility (boot the
-- ISO with the regression, collect the service's status and journal, the
-- network state and the status file). Split 2 boots a known-good ISO with the
-- same harness: if it is healthy, the harness and host are cleared and the
-- fault is in the guest image.
--
-- Parameters (-a key=value): those of lua/vmscript/investigation.lua, among them
--   iso=PATH        the ISO under investigation (default: the lab's live.iso,
--                   NixOS-shaped: its default entry has no serial console)
--   good_iso=PATH   the known-good ISO (default: the lab's live-good.iso)
--   via=entry|menu|screen  how a serial shell is reached on such an ISO
--                   (default entry: its "(serial console=…)" entry booted directly)
--   unit=NAME       the provisioning unit (default pre-nixos.service)
--   status=PATH     the status file it waits for (default /run/pre-nixos/storage-status)
--   iface=NAME      the interface that should get a lease (default lan)

local inv = require "vmscript.investigation"

local p = inv.params(args)
local unit, status_file, iface = p.unit, p.status, p.iface

--- Run the diagnostic bundle over the serial shell and record each command.
---@return table<string, {output: string, code: integer}>
local function collect(sh)
  local results = {}
  for key, cmd in pairs({
    status = "systemctl status --no-pager " .. unit,
    journal = "journalctl --no-pager -b -u " .. unit,
    networkctl = "networkctl status --no-pager " .. iface,
    links = "ip -o link",
    storage = "cat " .. status_file,
  }) do
    local r = sh:run(cmd, { timeout = "60s" })
    notes.command(cmd, r)
    results[key] = r
  end
  return results
end

-- Both guests boot at once: the harness waits on each in turn and loses nothing.
notes.step("Split 1 and 2: boot the ISO under investigation and a known-good ISO with the same harness")
local bad = inv.start(p, "subject", { name = "iso" })
local good = inv.start(p, "good", { name = "good-iso" })

local function verdict(name, vm)
  local sh = inv.login(p, vm) -- notes which way it reached the serial shell
  notes.step(name .. ": diagnostics")
  local r = collect(sh)
  local storage_ok = r.storage.code == 0
  local lan_ok = r.networkctl.code == 0 and not r.networkctl.output:find("not found", 1, true)
  notes.observe(string.format("%s: status file %s; interface %s %s", name,
    storage_ok and "present" or "MISSING", iface, lan_ok and "present" or "NOT FOUND"),
    { evidence = r.links.output })
  sh:run("systemctl poweroff --no-wall")
  local st = vm:wait{ timeout = "3m" }
  notes.observe(name .. ": shut down, reason " .. st.reason)
  return storage_ok, lan_ok
end

local bad_storage, bad_lan = verdict("under investigation", bad)
local good_storage, good_lan = verdict("known-good", good)

if good_storage and good_lan then
  notes.conclude("Host vs guest: the known-good ISO is healthy under the same harness, so the harness and host are cleared; the fault is in the image.")
else
  notes.conclude("Host vs guest: the known-good ISO fails too; suspect the harness or host before the image.")
end
if not bad_storage then
  notes.conclude("Storage: " .. unit .. " never wrote " .. status_file .. " (storage detection never wrote the status).")
end
if not bad_lan then
  notes.conclude("Network: interface " .. iface .. " does not exist in the guest; the NIC kept its kernel name, so no DHCP can run on " .. iface .. ".")
end
print("notes: " .. notes.path())
