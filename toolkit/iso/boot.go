package iso

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem/iso9660"
	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// BootEntry is one El Torito boot entry of an ISO.
type BootEntry struct {
	// Platform is "BIOS", "UEFI", "PowerPC", "Mac" or "0xNN".
	Platform string `json:"platform"`
	// Bootable is false for an entry marked not bootable.
	Bootable bool `json:"bootable"`
	// Emulation is "none", "floppy-1.2M", "floppy-1.44M", "floppy-2.88M" or
	// "hard-disk".
	Emulation string `json:"emulation"`
	// LoadSegment is the BIOS load segment (0 means the default 0x7C0).
	LoadSegment uint16 `json:"load_segment"`
	// Sectors is the number of 512-byte sectors the firmware loads, as the
	// catalog says (0 for UEFI often means "the whole image").
	Sectors uint16 `json:"sectors"`
	// LBA is the 2048-byte block where the boot image starts.
	LBA uint32 `json:"lba"`
	// Path is the file in the ISO whose data is the boot image, "" when no
	// file maps it (hidden, or an appended partition).
	Path string `json:"path,omitempty"`
	// Size is the boot image's size in bytes: its file's size, else the size
	// of the FAT filesystem found there (UEFI), else Sectors*512.
	Size int64 `json:"size"`
	// Note explains where Size came from when there is no file.
	Note string `json:"note,omitempty"`
}

// String is a one-line description: "UEFI /efi.img (884736 bytes, emulation none)".
func (b BootEntry) String() string {
	where := b.Path
	if where == "" {
		where = fmt.Sprintf("LBA %d", b.LBA)
	}
	s := fmt.Sprintf("%s %s (%d bytes, emulation %s)", b.Platform, where, b.Size, b.Emulation)
	if !b.Bootable {
		s += " [not bootable]"
	}
	return s
}

func platformName(id byte) string {
	switch id {
	case 0:
		return "BIOS"
	case 1:
		return "PowerPC"
	case 2:
		return "Mac"
	case 0xef:
		return "UEFI"
	}
	return fmt.Sprintf("0x%02x", id)
}

func emulationName(m byte) string {
	switch m & 0x0f {
	case 0:
		return "none"
	case 1:
		return "floppy-1.2M"
	case 2:
		return "floppy-1.44M"
	case 3:
		return "floppy-2.88M"
	case 4:
		return "hard-disk"
	}
	return fmt.Sprintf("0x%02x", m)
}

// Boot returns the El Torito boot entries of the ISO (none for an ISO that
// is not bootable from optical media). go-diskfs does not expose the boot
// catalog of an image it reads, so Boot parses it.
func (im *Image) Boot() ([]BootEntry, error) {
	if im.kind != KindISO {
		return nil, vmerr.New(vmerr.Usage, "%s is a %s; only an ISO has El Torito boot entries", im.name, im.kind)
	}
	im.mu.Lock()
	catLBA, ok, err := im.bootCatalogLBA()
	im.mu.Unlock()
	if err != nil || !ok {
		return nil, err
	}
	cat := make([]byte, sectorSize)
	if _, err := im.storage.ReadAt(cat, int64(catLBA)*sectorSize); err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "ISO image %s: read El Torito boot catalog at block %d", im.name, catLBA)
	}
	if cat[0] != 1 || cat[30] != 0x55 || cat[31] != 0xaa {
		return nil, vmerr.New(vmerr.IO, "ISO image %s: El Torito boot catalog at block %d has no valid validation entry", im.name, catLBA)
	}
	var sum uint16
	for i := 0; i < 32; i += 2 {
		sum += binary.LittleEndian.Uint16(cat[i:])
	}
	if sum != 0 {
		return nil, vmerr.New(vmerr.IO, "ISO image %s: El Torito validation entry checksum is wrong", im.name)
	}
	platform := cat[1]
	var out []BootEntry
	parse := func(e []byte, plat byte) BootEntry {
		return BootEntry{
			Platform:    platformName(plat),
			Bootable:    e[0] == 0x88,
			Emulation:   emulationName(e[1]),
			LoadSegment: binary.LittleEndian.Uint16(e[2:4]),
			Sectors:     binary.LittleEndian.Uint16(e[6:8]),
			LBA:         binary.LittleEndian.Uint32(e[8:12]),
		}
	}
	out = append(out, parse(cat[32:64], platform))
	for off := 64; off+32 <= len(cat); {
		h := cat[off : off+32]
		if h[0] != 0x90 && h[0] != 0x91 {
			break
		}
		plat := h[1]
		n := int(binary.LittleEndian.Uint16(h[2:4]))
		off += 32
		for i := 0; i < n && off+32 <= len(cat); i++ {
			e := cat[off : off+32]
			off += 32
			out = append(out, parse(e, plat))
			// Skip selection criteria extension entries.
			ext := e[12]&0x20 != 0
			for ext && off+32 <= len(cat) && cat[off] == 0x44 {
				ext = cat[off+1]&0x20 != 0
				off += 32
			}
		}
		if h[0] == 0x91 {
			break
		}
	}
	files, err := im.fileExtents()
	if err != nil {
		return nil, err
	}
	for i := range out {
		e := &out[i]
		if f, ok := files[e.LBA]; ok {
			e.Path, e.Size = f.Path, f.Size
			continue
		}
		if size, ok := im.fatSize(int64(e.LBA) * sectorSize); ok {
			e.Size = size
			e.Note = "FAT filesystem image not visible as a file"
		} else {
			e.Size = int64(e.Sectors) * 512
			e.Note = "no file maps this block; size from the catalog's sector count"
		}
		if int64(e.LBA)*sectorSize >= im.volumeSize {
			e.Note += " (beyond the ISO 9660 volume: an appended partition)"
		}
	}
	return out, nil
}

// bootCatalogLBA finds the El Torito boot record among the volume
// descriptors.
func (im *Image) bootCatalogLBA() (uint32, bool, error) {
	for i := int64(0); i < 64; i++ {
		vd := make([]byte, sectorSize)
		if _, err := im.storage.ReadAt(vd, systemArea+i*sectorSize); err != nil {
			return 0, false, vmerr.Wrap(vmerr.IO, err, "ISO image %s: read volume descriptor %d", im.name, i)
		}
		if string(vd[1:6]) != "CD001" || vd[0] == 255 {
			return 0, false, nil
		}
		if vd[0] == 0 && strings.HasPrefix(string(vd[7:39]), "EL TORITO SPECIFICATION") {
			return binary.LittleEndian.Uint32(vd[0x47:0x4b]), true, nil
		}
	}
	return 0, false, nil
}

// fileExtents maps the first block of every regular file to its entry.
func (im *Image) fileExtents() (map[uint32]Entry, error) {
	out := map[uint32]Entry{}
	err := im.Walk(func(e Entry) error {
		if !e.IsRegular() {
			return nil
		}
		im.mu.Lock()
		fi, err := im.statLocked(clean(e.Path))
		im.mu.Unlock()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*iso9660.StatT); ok && e.Size > 0 {
			if _, dup := out[st.Location]; !dup {
				out[st.Location] = e
			}
		}
		return nil
	})
	return out, err
}

// fatSize returns the size of a FAT filesystem starting at off.
func (im *Image) fatSize(off int64) (int64, bool) {
	bs := make([]byte, 512)
	if _, err := im.storage.ReadAt(bs, off); err != nil {
		return 0, false
	}
	if bs[510] != 0x55 || bs[511] != 0xaa {
		return 0, false
	}
	bps := int64(binary.LittleEndian.Uint16(bs[11:13]))
	if bps != 512 && bps != 1024 && bps != 2048 && bps != 4096 {
		return 0, false
	}
	sectors := int64(binary.LittleEndian.Uint16(bs[19:21]))
	if sectors == 0 {
		sectors = int64(binary.LittleEndian.Uint32(bs[32:36]))
	}
	if sectors == 0 {
		return 0, false
	}
	return sectors * bps, true
}
