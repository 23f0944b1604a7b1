-- 03-inspect-iso.lua: split 3, build vs runtime, before any boot.
--
-- Answers: does the ISO carry what the installer needs — the root key
-- (pre_nixos/root_key.pub), the pre-nixos.service unit, network/systemd
-- overrides — and how does it boot (El Torito entries, kernel command lines,
-- squashfs images opened in place, an initramfs)? The `unsquashfs -ll` of
-- the plan, with no root, no loop device and no extraction.
--
-- Parameters (-a key=value):
--   iso=PATH       the ISO to inspect (default: the lab's live.iso, NixOS-shaped:
--                  its system in /nix-store.squashfs)
--   assets="a;b"   path suffixes to look for (default
--                  "pre_nixos/root_key.pub;pre-nixos.service;systemd/network")
--
-- Prints "found ASSET: WHERE" or "missing ASSET" per asset; exits 0 when
-- every asset is found, 1 when one is missing.

local inv = require "vmscript.investigation"

local ok, img = pcall(lab.image, "systemd")
local path = args.iso or (ok and (img.live_iso or img.iso)) or error("pass -a iso=PATH (no lab image built)")
local assets = {}
for a in (args.assets or "pre_nixos/root_key.pub;pre-nixos.service;systemd/network"):gmatch("[^;]+") do
  assets[#assets + 1] = a
end

notes.step("Inspect " .. path)
local rep = inv.inspect_iso(path, assets, "iso")
print(string.format("iso %s: label %q", path, rep.label))
for _, line in ipairs(rep.summary) do print(line) end
if #rep.missing == 0 then
  notes.conclude("The ISO carries every asset looked for: " .. table.concat(assets, ", "))
else
  notes.conclude("The ISO lacks: " .. table.concat(rep.missing, ", "))
end
print("notes: " .. notes.path())
vmscript.exit(#rep.missing == 0 and 0 or 1)
