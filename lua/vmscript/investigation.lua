--- The investigation of the regressed installer image, as reusable pieces:
--- parameters with the seed's defaults, booting the image under investigation
--- and the known-good one with the same harness, and one probe per split of
--- the plan. scripts/0N-*.lua run one split each; scripts/investigate.lua
--- walks them all as a half-splitting tree (vmscript.split).
---
--- Parameters (`-a key=value`, read by `investigation.params(args)`):
---   iso=PATH          the ISO under investigation (default: the lab's live.iso,
---                     NixOS-shaped; its lab.iso when the live ISOs are not built)
---   knobs="…"         boot the lab's kernel directly (no ISO) with these words
---                     added to its command line, e.g. "lab.storage=hang"
---                     (the ISO is still what the build split inspects)
---   good_iso=PATH     the known-good ISO (default: live-good.iso for live.iso,
---                     else lab-good.iso; with knobs=,
---                     the lab's kernel with every knob clean)
---   unit=NAME         the provisioning unit (default pre-nixos.service)
---   status=PATH       the file it must write (default /run/pre-nixos/storage-status)
---   iface=NAME        the interface that must get a lease (default lan)
---   key=PATH          the root key the ISO must carry (default pre_nixos/root_key.pub)
---   user=, password=  the serial login (default root, empty password)
---   sudo_user=, sudo_password=  the account that escalates (default nixos/nixos)
---   memory=SIZE       guest memory (default 1536M)
---   boot_timeout=DUR  login deadline per boot (default 6m)
---   lease_timeout=DUR how long to wait for a lease once logged in (default 30s)
---   variants="a;b"    shutdown variants (default "systemctl poweroff --no-wall;poweroff")
---   deadline=DUR      per shutdown variant (default 120s)
---   cold=1            boot every guest cold; by default a guest logged in
---                     once is restored from its warm state (qemu.warm)
---   via=WAY           how a guest of an ISO whose default entry has no serial
---                     console (the live ISOs, NixOS's) reaches a serial shell:
---                     entry (default: its serial entry booted directly),
---                     menu (the boot menu on the screen, the serial entry
---                     chosen with keys) or screen (the default entry, a root
---                     login typed on the VGA screen starts a serial getty)
---   firmware=bios|uefi the guests' firmware (default bios; under UEFI a live
---                     ISO's menu is GRUB's)
---@class vmscript.investigation
local inv = {}

local collect = require "vmscript.collect"
local shutdown = require "vmscript.shutdown"

--- When each VM logged in (time.now()), by VM name.
---@type table<string, number>
inv.logged_in = {}

---@class vmscript.InvestigationParams
---@field iso string
---@field knobs string?
---@field good_iso string?
---@field unit string
---@field status string
---@field iface string
---@field key string
---@field user string
---@field password string
---@field sudo_user string
---@field sudo_password string
---@field memory string
---@field boot_timeout string
---@field lease_timeout string
---@field variants string[]
---@field deadline string
---@field cold boolean boot cold instead of restoring warm states
---@field via "entry"|"menu"|"screen" the way to a serial shell on a live ISO
---@field firmware "bios"|"uefi"
---@field img table the lab image (lab.image("systemd")), or {} when not built

--- Split "a;b;c" into a list.
---@param s string
---@return string[]
local function list(s)
  local out = {}
  for part in s:gmatch("[^;]+") do
    part = part:gsub("^%s+", ""):gsub("%s+$", "")
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

--- Read the parameters, with the seed's defaults.
---@param a table the script's args
---@return vmscript.InvestigationParams
function inv.params(a)
  a = a or {}
  local ok, img = pcall(lab.image, "systemd")
  if not ok then img = {} end
  local p = {
    img = img,
    iso = a.iso or img.live_iso or img.iso,
    knobs = a.knobs,
    good_iso = a.good_iso,
    unit = a.unit or "pre-nixos.service",
    status = a.status or "/run/pre-nixos/storage-status",
    iface = a.iface or "lan",
    key = a.key or "pre_nixos/root_key.pub",
    user = a.user or "root",
    password = a.password or "",
    sudo_user = a.sudo_user or "nixos",
    sudo_password = a.sudo_password or "nixos",
    memory = a.memory or "1536M",
    boot_timeout = a.boot_timeout or "6m",
    lease_timeout = a.lease_timeout or "30s",
    variants = list(a.variants or "systemctl poweroff --no-wall;poweroff"),
    deadline = a.deadline or "120s",
    cold = a.cold == "1",
    via = a.via or "entry",
    firmware = a.firmware or "bios",
  }
  if p.via ~= "entry" and p.via ~= "menu" and p.via ~= "screen" then
    error({ kind = "usage", message = "via=" .. p.via .. ": want entry, menu or screen" }, 0)
  end
  if p.good_iso == nil and not p.knobs then
    p.good_iso = (p.iso == img.live_iso and img.live_good_iso) or img.good_iso
  end
  return p
end

--- Describe what a params table boots, for the notes.
---@param p vmscript.InvestigationParams
---@return string subject, string good
function inv.describe(p)
  local subject = p.knobs and ("the lab kernel with `" .. p.knobs .. "`") or p.iso
  local good = p.good_iso or "the lab kernel with every knob clean"
  return subject, good
end

--- How each VM reaches its serial shell, by VM name: "iso" (the ISO's
--- default entry has a serial console), "entry", "menu" or "screen".
---@type table<string, string>
inv.vias = {}

--- The way to a serial shell on the ISO at path: "iso" when its default
--- BIOS entry already has a serial console (boot it as it is), else p.via.
---@param p vmscript.InvestigationParams
---@param path string
---@return string
local function via_for(p, path)
  local ok, entries = pcall(function() return iso.open(path):boot_entries() end)
  if not ok then return "iso" end
  for _, e in ipairs(entries) do
    if e.default and e.kind == "linux" and (e.loader == "grub") == (p.firmware == "uefi") then
      return e.append:find("console=ttyS", 1, true) and "iso" or p.via
    end
  end
  return "iso"
end

--- Boot opts.iso the way via says: "entry" boots its serial entry directly.
---@param opts vmscript.QemuStartOpts
---@param via string
local function boot_iso_via(opts, via)
  inv.vias[opts.name] = via
  if via == "entry" then opts.entry = "serial console" end
end

--- qemu.start's options for the subject (which="subject") or the
--- known-good image (which="good"), with the same harness: memory, network.
---@param p vmscript.InvestigationParams
---@param which "subject"|"good"
---@param o {name?: string, net?: any, forwards?: table}?
---@return vmscript.QemuStartOpts
local function start_opts(p, which, o)
  o = o or {}
  local opts = { name = o.name or which, memory = p.memory, net = o.net, forwards = o.forwards, firmware = p.firmware }
  if which == "subject" then
    if p.knobs then
      opts.lab, opts.append_extra = "systemd", p.knobs
    else
      opts.iso = assert(p.iso, "no ISO: pass -a iso=PATH or build the lab")
    end
  else
    if p.good_iso then
      opts.iso = p.good_iso
    else
      opts.lab, opts.append_extra = "systemd", "lab.storage=ok lab.lan=match lab.shutdown=clean"
    end
  end
  if opts.iso then boot_iso_via(opts, via_for(p, opts.iso)) end
  return opts
end

--- Start a guest cold (see start_opts), its console watched for a panic.
---@param p vmscript.InvestigationParams
---@param which "subject"|"good"
---@param o {name?: string, net?: any, forwards?: table}?
---@return vmscript.VM
function inv.start(p, which, o)
  local vm = qemu.start(start_opts(p, which, o))
  vm.console:watch("Kernel panic", "fail")
  return vm
end

--- Note where a guest came from: its warm state (and when it was saved),
--- or a cold boot (saved for the next run, or cold=1).
---@param vm vmscript.VM
---@param info vmscript.WarmInfo
local function note_origin(vm, info)
  if info.hit then
    notes.observe(string.format("%s: restored from warm state %s, saved %s by the run %s (its boot and login took %.0fs; the restore %.1fs); its console starts at the restore",
      vm.name, info.key:sub(1, 12), info.created, info.made_by, info.boot_s, info.took_s))
  elseif info.key then
    notes.observe(string.format("%s: booted cold and saved as warm state %s (%s); the next run restores it (-a cold=1 boots cold)",
      vm.name, info.key:sub(1, 12), table.concat(info.why, "; ")))
  else
    notes.observe(vm.name .. ": booted cold (-a cold=1)")
  end
end

--- Start a guest and log in: restored from its warm state when one was
--- saved for the same image, options and login (qemu.warm), else booted,
--- logged in and saved; cold=1 boots without the cache. Its console is
--- watched for a panic either way.
---@param p vmscript.InvestigationParams
---@param which "subject"|"good"
---@param o {name?: string, net?: any, forwards?: table}?
---@return vmscript.VM vm, vmscript.Shell sh
function inv.boot(p, which, o)
  -- ready closes over the login's parameters only: they, not the rest of
  -- the investigation's, are part of the warm state.
  local opts = start_opts(p, which, o)
  local login = { user = p.user, password = p.password, boot_timeout = p.boot_timeout,
    via_of = inv.vias[opts.name] or "iso" }
  local vm, sh, info = qemu.warm{ start = opts, cold = p.cold, ready = function(vm)
    vm.console:watch("Kernel panic", "fail")
    return inv.login(login, vm)
  end }
  if info.hit then
    vm.console:watch("Kernel panic", "fail")
    inv.logged_in[vm.name] = time.now()
  end
  note_origin(vm, info)
  return vm, sh
end

--- Log in on the serial getty and take over the shell once its own prompt
--- ("user@host:~# ") shows. (vm:login's generic prompt pattern can match the
--- "#" of the motd's "Linux lab … #1 SMP …" line when the serial output
--- arrives in pieces under load; it then types its setup into a login that
--- has not finished, and the Ctrl-C of its retry kills that login.)
---@param p vmscript.InvestigationParams
---@param vm vmscript.VM
---@param from any where to look for the login prompt
local function getty_login(p, vm, from)
  vm.console:expect("login: ", { timeout = p.boot_timeout, from = from })
  vm.console:sendline(p.user)
  local prompt = { re = [[[\w.-]+@[\w.-]+:[^\n]*[#$] ?$]] }
  local m = vm.console:expect({ "assword:", "Login incorrect", prompt }, { timeout = "3m" })
  if m.index == 1 then
    vm.console:sendline(p.password)
    m = vm.console:expect({ "Login incorrect", prompt }, { timeout = "3m" })
    if m.index == 1 then error({ kind = "auth", message = vm.name .. ": login as " .. p.user .. " failed: Login incorrect" }, 0) end
  elseif m.index == 2 then
    error({ kind = "auth", message = vm.name .. ": login as " .. p.user .. " failed: Login incorrect" }, 0)
  end
  return vm:shell{ user = p.user, timeout = "60s" }
end

--- Bring a guest booted from a live ISO to a serial getty, the way via
--- says, and note which way it took. "menu": wait for the boot menu on the
--- screen, choose the serial entry with the keys (Down, Enter); "screen":
--- wait for the default entry's login on the VGA screen, log in there and
--- start a getty on the serial port. Returns where the serial login prompt
--- is to be looked for.
---@param p vmscript.InvestigationParams|table
---@param vm vmscript.VM
---@param via string
---@return any from
local function reach_serial(p, vm, via)
  local how = {
    iso = "its ISO's default entry, which has a serial console",
    entry = "the ISO's serial entry, booted directly (qemu.start{entry=})",
    menu = "the boot menu on the screen: the serial entry chosen with Down, Enter",
    screen = "the default entry (no serial console): a root login typed on the VGA screen started a serial getty",
  }
  if via == "menu" then
    vm.screen:expect("serial console", { timeout = p.boot_timeout })
    vm:key("down", "ret")
  elseif via == "screen" then
    vm.screen:expect({ re = [[login: ?$]] }, { timeout = p.boot_timeout })
    vm:type(p.user .. "\n")
    vm.screen:expect({ re = [[[#$] ?$]] }, { timeout = "3m" })
    vm:type("systemctl start serial-getty@ttyS0.service\n")
  end
  notes.observe(string.format("%s: reached the serial shell via %s: %s", vm.name, via, how[via] or via))
  return "start"
end

--- Log in on the serial console (root by default); the duration is noted.
--- A guest under heavy load sometimes fails to start the login's session
--- scope ("Failed to start session-1.scope"): the shell dies and the getty
--- prompts again. That ends the login at once (a console watch) and it is
--- retried, up to three times.
---@param p vmscript.InvestigationParams
---@param vm vmscript.VM
---@return vmscript.Shell
function inv.login(p, vm)
  local t0 = time.now()
  local from = reach_serial(p, vm, p.via_of or inv.vias[vm.name] or "iso")
  for attempt = 1, 3 do
    local unwatch = vm.console:watch({ re = [[Failed to start .*session-\d+\.scope]] }, "fail")
    local ok, sh = pcall(getty_login, p, vm, from)
    unwatch()
    if ok then
      inv.logged_in[vm.name] = time.now()
      notes.observe(string.format("%s: logged in as %s on the serial console at +%.0fs of the run (%.0fs waited%s)",
        vm.name, p.user, time.now(), time.now() - t0, attempt > 1 and (", attempt " .. attempt) or ""))
      return sh
    end
    if attempt == 3 or type(sh) ~= "table" or sh.kind ~= "watch" then error(sh, 0) end
    notes.observe(string.format("%s: the guest failed to start the login session (%s); logging in again",
      vm.name, tostring(sh.message or sh)))
    from = vm.console:mark()
    vm.console:send("\21\r") -- Ctrl-U kills what was typed at the new prompt; Enter asks for a fresh one
  end
  error("unreachable")
end

--- The diagnostic bundle of one guest (split 1).
---@param p vmscript.InvestigationParams
---@param sh vmscript.Shell
---@param prefix string
---@param client vmscript.SSHClient?
---@return vmscript.Bundle
function inv.bundle(p, sh, prefix, client)
  return collect.bundle{ shell = sh, ssh = client, unit = p.unit, iface = p.iface, files = { p.status },
    prefix = prefix, extra = {
      ["proc-cmdline"] = "cat /proc/cmdline",
      ["unit-environment"] = "systemctl show -p Environment -p ActiveState -p SubState " .. p.unit,
      ["networkctl-list"] = "networkctl list --no-pager",
    } }
end

--- Wait for a guest's lease on the LAN; returns the lease or nil and why.
--- The timeout counts from the guest's login (it has been up since before
--- then), with at least 5 s left.
---@param l vmscript.LAN
---@param vm vmscript.VM
---@param timeout string
---@return table? lease, string? why
function inv.lease(l, vm, timeout)
  local t = time.seconds(timeout)
  local since = inv.logged_in[vm.name]
  if since then t = math.max(5, t - (time.now() - since)) end
  local ok, r = pcall(function() return l:wait_lease{ mac = vm.mac, timeout = t } end)
  if ok then return r, nil end
  return nil, type(r) == "table" and r.message or tostring(r)
end

--- The health of one guest from its bundle: status file, unit, interface.
---@param p vmscript.InvestigationParams
---@param b vmscript.Bundle
---@return {storage: boolean, iface: boolean, unit_loaded: boolean, unit_state: string, ifaces: string[]}
function inv.health(p, b)
  local f = b.files[p.status]
  local nc = b.networkctl
  local env = b.extra["unit-environment"]
  return {
    storage = f ~= nil and f.code == 0,
    iface = nc.code == 0 and not nc.output:find("not found", 1, true),
    unit_loaded = b.status.output:find("Loaded: loaded", 1, true) ~= nil,
    unit_state = env and env.output:match("SubState=(%S+)") or "?",
    ifaces = collect.interfaces(b.links.output),
  }
end

-- ---------------------------------------------------------------------------
-- Split 3: build vs runtime — what the ISO carries, before any boot.

---@class vmscript.IsoFinding
---@field asset string what was looked for
---@field found string[] where it was found ("iso:/path" or "iso:/sq.squashfs:/path")
---@field note string? e.g. "not inspectable: inside a gzip initramfs"

---@class vmscript.IsoReport
---@field path string
---@field label string
---@field boot table[] El Torito entries
---@field entries table[] boot menu entries (iso_image:boot_entries)
---@field menu_warnings table[] what the boot menus leave to the boot, with file:line
---@field squashfs {path: string, compression: string, entries: integer, error: string?}[]
---@field initramfs {path: string, format: string, entries: integer, error: string?}[]
---@field cmdlines string[] "label [default] (file:line): command line" per Linux entry
---@field findings vmscript.IsoFinding[]
---@field missing string[] assets found nowhere
---@field listing string the artifact with the ls -l of the ISO, its squashfs images and initramfs

local MAGIC = {
  ["hsqs"] = "squashfs",
  ["\31\139"] = "gzip",
  ["\253\55\122\88\90\0"] = "xz",
  ["\40\181\47\253"] = "zstd",
  ["070701"] = "cpio",
  ["\2\33\76\24"] = "lz4",
}

--- What kind of file the first bytes say it is.
---@param head string
---@return string?
local function magic(head)
  for m, kind in pairs(MAGIC) do
    if head:sub(1, #m) == m then return kind end
  end
  return nil
end

--- Whether path ends with the asset (a path suffix on a "/" boundary).
---@param path string
---@param asset string
---@return boolean
local function matches(path, asset)
  asset = asset:gsub("^/+", "")
  if path == "/" .. asset then return true end
  return #path > #asset and path:sub(-#asset) == asset and path:sub(-#asset - 1, -#asset - 1) == "/"
end

--- Open a file system inside the ISO (a squashfs or an initramfs), list it
--- into the listing and the trees to search; a failure is a note, not an
--- error.
---@param s table the scan: rep, listing, trees
---@param kind "squashfs"|"initramfs"
---@param path string
---@param open fun(): vmscript.IsoImage|vmscript.Initramfs
local function add_tree(s, kind, path, open)
  local ok, fs = pcall(open)
  local item = { path = path }
  table.insert(s.rep[kind], item)
  if not ok then
    item.error, item.entries = tostring(fs), 0
    notes.observe(kind .. " " .. path .. " could not be opened: " .. tostring(fs))
    return
  end
  local entries = fs:walk()
  item.entries = #entries
  item.compression, item.format = fs.compression, fs.compression
  table.insert(s.listing, "")
  table.insert(s.listing, string.format("# %s %s (%s)", kind, path, fs.compression))
  for _, e in ipairs(entries) do table.insert(s.listing, e.line) end
  table.insert(s.trees, { prefix = "iso:" .. path .. ":", entries = entries })
end

--- Whether the file at e is an initramfs by its name and first bytes.
---@param kind string? what magic says
---@param lower string the lower-cased path
local function looks_like_initrd(kind, lower)
  return (kind == "gzip" or kind == "xz" or kind == "zstd" or kind == "cpio" or kind == "lz4")
    and (lower:find("initr", 1, true) or lower:find("initramfs", 1, true)) ~= nil
end

--- Walk the ISO: the listing, and each squashfs and initramfs opened in place.
---@param img vmscript.IsoImage
---@param s table the scan
local function scan_files(img, s)
  local own = img:walk()
  table.insert(s.trees, { prefix = "iso:", entries = own })
  for _, e in ipairs(own) do
    table.insert(s.listing, e.line)
    if e.type == "file" and e.size >= 4 then
      local kind = magic((img:read(e.path, { max = 8 })))
      if kind == "squashfs" then
        add_tree(s, "squashfs", e.path, function() return img:squashfs(e.path) end)
      elseif looks_like_initrd(kind, e.path:lower()) then
        add_tree(s, "initramfs", e.path, function() return img:initramfs(e.path) end)
      end
    end
  end
end

--- The boot menus: every Linux entry's command line, and the warnings.
---@param img vmscript.IsoImage
---@param rep vmscript.IsoReport
local function read_menus(img, rep)
  local ok, entries, warnings = pcall(img.boot_entries, img)
  if not ok then
    notes.observe("the boot menus of " .. rep.path .. " could not be read: " .. tostring(entries))
    rep.entries, rep.menu_warnings = {}, {}
    return
  end
  rep.entries, rep.menu_warnings = entries, warnings
  for _, e in ipairs(entries) do
    if e.kind == "linux" then
      table.insert(rep.cmdlines, string.format("%s %q%s (%s): %s", e.loader, e.label,
        e.default and " [default]" or "", e.source, e.append))
    end
  end
end

--- Where each asset is, over the ISO and the file systems inside it.
---@param s table the scan
---@param assets string[]
local function locate(s, assets)
  local rep = s.rep
  for _, a in ipairs(assets) do
    local f = { asset = a, found = {} }
    for _, t in ipairs(s.trees) do
      for _, e in ipairs(t.entries) do
        if matches(e.path, a) then table.insert(f.found, t.prefix .. e.path) end
      end
    end
    if #f.found == 0 then table.insert(rep.missing, a) end
    table.insert(rep.findings, f)
  end
end

--- The report's summary lines.
---@param rep vmscript.IsoReport
---@return string[]
local function summarize(rep)
  local summary = {}
  for _, b in ipairs(rep.boot) do
    table.insert(summary, string.format("boot: %s %s (%d bytes)", b.platform, b.path or "?", b.size or 0))
  end
  for _, kind in ipairs({ "squashfs", "initramfs" }) do
    for _, t in ipairs(rep[kind]) do
      table.insert(summary, string.format("%s: %s (%s)", kind, t.path,
        t.error and ("error: " .. t.error) or string.format("%s, %d entries", t.compression, t.entries)))
    end
  end
  for _, c in ipairs(rep.cmdlines) do table.insert(summary, "entry: " .. c) end
  for _, w in ipairs(rep.menu_warnings) do table.insert(summary, "menu warning: " .. w.line) end
  for _, f in ipairs(rep.findings) do
    table.insert(summary, #f.found > 0 and ("found " .. f.asset .. ": " .. table.concat(f.found, ", "))
      or ("missing " .. f.asset))
  end
  return summary
end

--- Inspect an ISO: El Torito entries, boot menu entries (with file:line),
--- squashfs images and initramfs archives opened in place, and where each
--- asset is in any of them. Everything goes to the notes; the full listing
--- is an artifact.
---@param path string
---@param assets string[] path suffixes, e.g. {"pre_nixos/root_key.pub", "pre-nixos.service"}
---@param name string? artifact prefix (default "iso")
---@return vmscript.IsoReport
function inv.inspect_iso(path, assets, name)
  local img = iso.open(path)
  local rep = { path = path, label = img.label, boot = img:boot(), squashfs = {}, initramfs = {},
    cmdlines = {}, findings = {}, missing = {} }
  local s = { rep = rep, listing = { "# " .. path .. " (label " .. img.label .. ")" }, trees = {} }
  scan_files(img, s)
  read_menus(img, rep)
  locate(s, assets)
  rep.listing = notes.save((name or "iso") .. "-listing.txt", table.concat(s.listing, "\n") .. "\n")
  rep.summary = summarize(rep)
  notes.observe(string.format("ISO %s (label %q):\n%s", path, img.label, table.concat(rep.summary, "\n")),
    { evidence = rep.listing })
  return rep
end

-- ---------------------------------------------------------------------------
-- Probes. Each takes the investigation's context and returns a verdict and
-- evidence ({text=, files=, conclusion=}) for vmscript.split.

---@class vmscript.InvestigationContext
---@field p vmscript.InvestigationParams
---@field lan vmscript.LAN
---@field subject vmscript.VM
---@field good vmscript.VM?
---@field sh vmscript.Shell the subject's root shell
---@field bundle vmscript.Bundle the subject's bundle
---@field health table
---@field good_shell vmscript.Shell?

--- Split 1: reproduce with maximum visibility. Bad when the symptoms show.
---@param ctx vmscript.InvestigationContext
function inv.probe_baseline(ctx)
  local p = ctx.p
  if not ctx.sh then ctx.sh = inv.login(p, ctx.subject) end
  ctx.bundle = ctx.bundle or inv.bundle(p, ctx.sh, "subject")
  local h = inv.health(p, ctx.bundle)
  ctx.health = h
  local symptoms = {}
  if not h.storage then symptoms[#symptoms + 1] = p.status .. " missing (" .. p.unit .. " " .. h.unit_state .. ")" end
  if not h.iface then symptoms[#symptoms + 1] = "interface " .. p.iface .. " not found (links: " .. table.concat(h.ifaces, ", ") .. ")" end
  local ev = { files = ctx.bundle.artifacts }
  if #symptoms == 0 then
    ev.text = string.format("%s wrote %s; %s exists", p.unit, p.status, p.iface)
    return "good", ev
  end
  ev.text = "symptoms reproduced: " .. table.concat(symptoms, "; ")
  return "bad", ev
end

--- Split 2: host vs guest. The known-good image under the same harness.
---@param ctx vmscript.InvestigationContext
function inv.probe_host_vs_guest(ctx)
  local p = ctx.p
  local vm = assert(ctx.good, "no known-good VM")
  local sh = ctx.good_shell or inv.login(p, vm)
  ctx.good_shell = sh
  local b = inv.bundle(p, sh, "good")
  local h = inv.health(p, b)
  local lease, why = nil, "no LAN"
  if ctx.lan then lease, why = inv.lease(ctx.lan, vm, p.lease_timeout) end
  -- The good guest has done its job: power it off now (frees the CPU).
  pcall(function() vm.console:sendline("systemctl poweroff --no-wall") end)
  local files = b.artifacts
  local parts = {
    h.storage and ("wrote " .. p.status) or (p.status .. " MISSING"),
    h.iface and (p.iface .. " present") or (p.iface .. " NOT FOUND"),
    lease and ("lease " .. lease.ip .. " from the harness's DHCP server") or ("no lease: " .. tostring(why)),
  }
  local text = "known-good image: " .. table.concat(parts, "; ")
  if h.storage and h.iface and (lease or not ctx.lan) then
    return "good", { text = text, files = files }
  end
  return "bad", { text = text, files = files }
end

--- Split 3: build vs runtime. The ISO carries the key, the unit and the
--- network config, and the running guest has the unit loaded.
---@param ctx vmscript.InvestigationContext
function inv.probe_build(ctx)
  local p = ctx.p
  if not p.iso then return "inconclusive", "no ISO to inspect" end
  local rep = inv.inspect_iso(p.iso, { p.key, p.unit, "systemd/network" }, "subject-iso")
  ctx.iso_report = rep
  local files = { rep.listing }
  local key_found = #rep.findings[1].found > 0
  local unit_iso = #rep.findings[2].found > 0
  local unit_runtime = ctx.health and ctx.health.unit_loaded
  if ctx.bundle then files[#files + 1] = ctx.bundle.status.artifact end
  local text = string.format("%s %s in the ISO; %s %s (%s); cmdline %s", p.key,
    key_found and ("at " .. rep.findings[1].found[1]) or "MISSING", p.unit,
    unit_iso and ("at " .. rep.findings[2].found[1]) or "not in the ISO's file systems",
    unit_runtime and "loaded in the running guest" or "NOT loaded in the running guest",
    rep.cmdlines[1] or "?")
  if p.good_iso and not p.knobs then
    -- What the image under investigation and the known-good one differ in.
    local ok, d = pcall(iso.diff, p.iso, p.good_iso)
    if ok then
      local lines = {}
      for _, e in ipairs(d) do lines[#lines + 1] = string.format("%s %s (%s)", e.op, e.path, table.concat(e.what or {}, ", ")) end
      files[#files + 1] = notes.save("iso-diff-vs-good.txt", string.format("# %s vs %s\n%s\n", p.iso, p.good_iso,
        #lines > 0 and table.concat(lines, "\n") or "(identical)"))
      text = text .. string.format("; differs from the known-good ISO in %d paths%s", #lines,
        #lines > 0 and (": " .. table.concat(lines, "; ", 1, math.min(#lines, 5))) or "")
    end
  end
  if key_found and (unit_iso or unit_runtime) then
    return "good", { text = text, files = files }
  end
  return "bad", { text = text, files = files, conclusion = "Build: the image lacks " ..
    (not key_found and p.key or p.unit) .. " — the fault is in the build, not the runtime" }
end

--- Split 4: network. Server side: did the harness's DHCP server see the
--- guest? Guest side: does the interface exist, what did configure_lan say,
--- what is the service's environment.
---@param ctx vmscript.InvestigationContext
function inv.probe_network(ctx)
  local p = ctx.p
  local o = { shell = ctx.sh }
  local files = {}
  local lease, why
  if ctx.lan then lease, why = inv.lease(ctx.lan, ctx.subject, p.lease_timeout) end
  local events = ctx.lan and ctx.lan:dhcp_events{ mac = ctx.subject.mac } or {}
  local lines = {}
  for _, e in ipairs(events) do lines[#lines + 1] = e.line end
  if ctx.lan then
    files[#files + 1] = notes.save("subject-dhcp-events.txt", string.format("# DHCP messages of %s (%s) on %s\n%s\n",
      ctx.subject.name, ctx.subject.mac, ctx.lan.name, #lines > 0 and table.concat(lines, "\n") or "(none: nothing was seen)"))
    if ctx.lan.dhcp_log then files[#files + 1] = ctx.lan.dhcp_log end
  end
  local nc = ctx.bundle.networkctl
  local links = ctx.bundle.links
  local cfg = collect.command(o, "pre-nixos-configure-lan", "journalctl --no-pager -b -u " .. p.unit .. " -g configure_lan")
  local link_files = collect.command(o, "networkd-config", "ls -l /etc/systemd/network /run/systemd/network 2>&1; networkctl list --no-pager")
  for _, r in ipairs({ nc, links, cfg, link_files, ctx.bundle.extra["unit-environment"] }) do
    if r and r.artifact then files[#files + 1] = r.artifact end
  end
  local env = ctx.bundle.extra["unit-environment"]
  local exec = env and env.output:match("PRE_NIXOS_EXEC=(%S+)") or "?"
  local finished = cfg.output:find("configure_lan: finish", 1, true) ~= nil
  local iface_missing = nc.output:find("not found", 1, true) ~= nil or nc.code ~= 0
  local nics = ctx.health.ifaces
  local discover = false
  for _, e in ipairs(events) do if e.type == "DISCOVER" and e.dir == "in" then discover = true end end
  local text = string.format("lease: %s; DHCP messages from %s: %d%s; networkctl status %s: %s; links: %s; configure_lan %s; PRE_NIXOS_EXEC=%s",
    lease and lease.ip or ("none (" .. tostring(why) .. ")"), ctx.subject.mac, #events,
    discover and " (DISCOVER seen)" or "", p.iface, iface_missing and "not found" or "present",
    table.concat(nics, ", "), finished and "finished" or "did NOT finish", exec)
  if lease and not iface_missing then
    return "good", { text = text, files = files,
      conclusion = "Network: " .. p.iface .. " holds lease " .. lease.ip .. "; configure_lan " .. (finished and "finished" or "did not finish") }
  end
  if not ctx.lan and not iface_missing then
    return "inconclusive", { text = text .. " (no vmscript LAN: the server side is not visible)", files = files }
  end
  local c = (discover and "DISCOVER seen but no lease" or "no DISCOVER from the guest") ..
    string.format("; `%s` not found, NIC is %s", p.iface, #nics > 0 and table.concat(nics, "/") or "(none)")
  if not iface_missing then c = (discover and "DISCOVER seen but no lease" or "no DISCOVER from the guest") ..
    string.format("; `%s` exists but has no lease", p.iface) end
  c = c .. string.format(" (configure_lan %s with `%s` absent; nothing renamed the NIC to %s, so the .network matching Name=%s matches nothing)",
    finished and "finished" or "did not finish", p.iface, p.iface, p.iface)
  return "bad", { text = text, files = files, conclusion = "Network: " .. c }
end

--- Split 5: storage. Was the status written; if not, does detection work
--- on its own, what would the plan do, and what does a dry run say.
---@param ctx vmscript.InvestigationContext
function inv.probe_storage(ctx)
  local p = ctx.p
  local o = { shell = ctx.sh }
  local st = ctx.bundle.files[p.status]
  local files = { st and st.artifact, ctx.bundle.journal.artifact }
  if st and st.code == 0 then
    return "good", { text = p.status .. ": " .. st.output:gsub("%s+$", ""), files = files,
      conclusion = "Storage: " .. p.unit .. " wrote " .. p.status }
  end
  local detect = collect.command(o, "pre-nixos-detect-storage", "pre-nixos-detect-storage")
  local plan = collect.command(o, "pre-nixos-plan-only", "pre-nixos --plan-only")
  local dry = collect.command(o, "pre-nixos-exec-0", "PRE_NIXOS_EXEC=0 pre-nixos")
  local waiting = collect.command(o, "pre-nixos-waiting", "journalctl --no-pager -b -u " .. p.unit .. " -g 'waiting|detect_storage'")
  for _, r in ipairs({ detect, plan, dry, waiting }) do files[#files + 1] = r.artifact end
  local disks = {}
  for d in detect.output:gmatch("disk (%S+)") do disks[#disks + 1] = d end
  local is_waiting = waiting.output:find("waiting for", 1, true) ~= nil
  local text = string.format("%s missing; %s is %s%s; pre-nixos-detect-storage: %s; --plan-only: %s",
    p.status, p.unit, ctx.health.unit_state, is_waiting and " and its journal says it is waiting for it" or "",
    #disks > 0 and ("disks " .. table.concat(disks, ", ")) or detect.output:gsub("%s+$", ""),
    (plan.output:match("(would write[^\n]*)") or ("exit " .. plan.code)))
  return "bad", { text = text, files = files, conclusion = string.format(
    "Storage: storage detection never wrote the status: %s %s %s, while detection itself runs (pre-nixos-detect-storage: %s) and --plan-only %s; the step that should write it never does",
    p.unit, is_waiting and "waits forever for" or "never wrote", p.status,
    #disks > 0 and ("disks " .. table.concat(disks, ", ")) or (detect.output:match("[^\n]+") or "no output"),
    plan.output:match("would write[^\n]*") or ("exits " .. plan.code)) }
end

--- Split 6: harness. Root escalation for the sudo user, then the shutdown
--- variants, each from a fork of a checkpoint of the subject at its prompt.
---@param ctx vmscript.InvestigationContext
function inv.probe_harness(ctx)
  local p = ctx.p
  local files = {}
  local sudo = ctx.sh:run(string.format("echo %s | su %s -s /bin/sh -c 'sudo -S -k -p \"[sudo] password: \" id -u' 2>&1",
    p.sudo_password, p.sudo_user), { timeout = "60s" })
  local sudo_art = notes.save("harness-sudo.txt", string.format("$ sudo -S id -u (as %s)\nexit %d\n%s", p.sudo_user, sudo.code, sudo.output))
  notes.command(string.format("sudo -S id -u (as %s, password from stdin)", p.sudo_user), { output = sudo.output, code = sudo.code, artifact = sudo_art })
  files[#files + 1] = sudo_art
  local sudo_ok = sudo.code == 0 and sudo.output:match("(%d+)%s*$") == "0"
  local cp = ctx.subject:checkpoint{ name = "subject-at-prompt" }
  local res = shutdown.compare{ variants = p.variants, checkpoint = cp, deadline = p.deadline, name = "shutdown",
    fork = function(c, name) return c:fork{ name = name, net = ctx.lan } end }
  ctx.shutdown = res
  for _, r in ipairs(res.records) do files[#files + 1] = r.timeline; files[#files + 1] = r.normalised end
  for _, d in ipairs(res.diffs) do files[#files + 1] = d.artifact end
  local parts = { "sudo as " .. p.sudo_user .. ": " .. (sudo_ok and "ok (uid 0)" or ("FAILED (exit " .. sudo.code .. ")")) }
  local failed = {}
  for _, r in ipairs(res.records) do
    parts[#parts + 1] = string.format("`%s` → %s, reason %s%s", r.command, r.outcome, r.reason,
      r.prompt and (", prompt " .. string.format("%q", r.prompt)) or "")
    if r.outcome ~= "exited" or r.prompt then failed[#failed + 1] = r end
  end
  local text = table.concat(parts, "; ")
  if sudo_ok and #failed == 0 then
    return "good", { text = text, files = files,
      conclusion = "Harness: login, sudo and every shutdown variant work (" .. table.concat(p.variants, ", ") .. ")" }
  end
  local c = {}
  if not sudo_ok then c[#c + 1] = "root escalation for " .. p.sudo_user .. " fails" end
  for _, r in ipairs(failed) do
    if r.prompt then
      local d = ""
      for _, df in ipairs(res.diffs) do
        if df.b == r.variant and df.text:find(r.prompt_kind == "[y/N]" and "[y/N]" or r.prompt_kind, 1, true) then
          d = " (the teardown diff shows it: " .. df.artifact .. ")"
        end
      end
      c[#c + 1] = string.format("`%s` asks %q — an interactive %s prompt the automation never answers%s",
        r.command, r.prompt, r.prompt_kind, d)
    else
      c[#c + 1] = string.format("`%s` did not power off before the deadline (%s)", r.command, r.reason)
    end
  end
  return "bad", { text = text, files = files, conclusion = "Harness: " .. table.concat(c, "; ") }
end

return inv
