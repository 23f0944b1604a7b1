-- netboot.lua: the same image via netboot, with the same harness.
--
-- Answers: does the image behave the same when it is network-booted (the
-- lab's netboot tree: iPXE fetches the kernel and initramfs over HTTP from
-- vmscript's server) as when it boots from the ISO? A difference points at
-- the boot medium (ISO, boot loader config) rather than the image's runtime.
-- Collects the same bundle and reports the same health (status file,
-- interface), plus what the netboot server served.
--
-- Parameters (-a key=value):
--   root=DIR        the netboot tree (default: the lab's netboot/)
--   knobs="…"       words added to the kernel command line (default: none,
--                   i.e. the tree's own, every knob clean)
--   unit=pre-nixos.service  status=/run/pre-nixos/storage-status  iface=lan
--   memory=1536M  boot_timeout=6m
-- Exit: 0 healthy, 1 symptoms.

local inv = require "vmscript.investigation"
local p = inv.params(args)
local root = args.root or p.img.netboot or error("pass -a root=DIR (no lab image built)")
local append = (p.img.append or "console=ttyS0,115200") .. (args.knobs and (" " .. args.knobs) or "")

notes.step("Netboot: serve " .. root .. " and boot from it")
local srv = netboot.serve{ root = root, files = {
  ["vmscript.ipxe"] = "#!ipxe\nkernel {{http}}/vmlinuz initrd=initramfs " .. append ..
    "\ninitrd {{http}}/initramfs\nboot\n",
} }
local vm = qemu.start{ name = "netboot", netboot = srv, bootfile = "vmscript.ipxe", memory = p.memory }
vm.console:watch("Kernel panic", "fail")
local sh = inv.login(p, vm)
local served = {}
for _, r in ipairs(srv:requests()) do
  served[#served + 1] = string.format("%s %s %s %d bytes %s", r.proto, r.op, r.file, r.bytes, r.outcome)
end
local reqs = notes.save("netboot-requests.txt", table.concat(served, "\n") .. "\n")
notes.observe("the netboot server served " .. #served .. " requests", { evidence = reqs })
notes.step("Netboot: the diagnostic bundle")
local ctx = { p = p, subject = vm, sh = sh }
ctx.bundle = inv.bundle(p, sh, "netboot")
local verdict, ev = inv.probe_baseline(ctx)
notes.observe("Netboot: " .. ev.text, { evidence = ev.files })
notes.conclude(verdict == "good" and "Netboot: the image is healthy when network-booted" or ("Netboot: " .. ev.text))
print("netboot: " .. verdict .. " — " .. ev.text)
for _, s in ipairs(served) do print("served: " .. s) end
sh:run("systemctl poweroff --no-wall", { timeout = "20s" })
pcall(function() vm:wait{ timeout = "2m" } end)
print("notes: " .. notes.path())
vmscript.exit(verdict == "good" and 0 or 1)
