-- 00-shell.lua: get a root shell on the image under investigation, and say how.
--
-- Answers: can the harness reach a shell on this ISO at all, and which way?
-- A NixOS-shaped ISO boots from a menu on the screen and its default entry
-- has no serial console; there are three ways to the serial shell vmscript
-- drives (-a via=):
--   entry   boot the ISO's "(serial console=…)" entry directly: its kernel and
--           initrd out of the ISO, the ISO attached (qemu.start{entry=})
--   menu    boot through the firmware and choose that entry in the boot menu on
--           the screen (isolinux under BIOS, GRUB under UEFI: -a firmware=uefi)
--   screen  boot the default entry, log in on the VGA screen and start a getty
--           on the serial port from there
-- An ISO whose default entry has a serial console (lab.iso) boots as it is.
--
-- Parameters (-a key=value): via=entry|menu|screen, firmware=bios|uefi,
--   iso=PATH (default: the lab's live.iso), cold=1, memory=, boot_timeout=
-- Prints the way, the kernel command line and the root file system; exit 0.

local inv = require "vmscript.investigation"
local p = inv.params(args)

notes.step("Reach a root shell on " .. inv.describe(p))
local t0 = time.now()
local vm, sh = inv.boot(p, "subject", { net = "none" })
local r = sh:run("cat /proc/cmdline; findmnt -n -o SOURCE,FSTYPE /; findmnt -n -o SOURCE,FSTYPE /iso || true")
notes.command("cat /proc/cmdline; findmnt / /iso", r)
print(string.format("shell via %s after %.1fs", inv.vias[vm.name] or "?", time.now() - t0))
print(r.output)
print("notes: " .. notes.path())
