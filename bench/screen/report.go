package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vmscript/vmscript/toolkit/screen"
)

// report prints the markdown section.
func report(ctx context.Context, dir string, text *textResult, shots []*capture) error {
	fmt.Println("## The screen as a console (TCG)")
	fmt.Println()
	fmt.Printf("Text mode, grub-rescue-cdrom.iso under SeaBIOS: **%d of %d characters wrong** on the menu "+
		"(rows 0–21 against GRUB's layout of the ISO's grub.cfg; goal 0). One reading (registers and buffer, "+
		"guest paused): %s, paused %s (medians of %d).\n\n",
		text.wrong, text.total, ms(median(text.readTook)), ms(median(text.paused)), len(text.readTook))
	fmt.Printf("A wait returns **%s** (median, p90 %s, max %s, %d waits) after the text is in the buffer, polling "+
		"every %s (the text's appearance timed by a side reader of the buffer every ~3 ms).\n\n",
		ms(median(text.latency)), ms(pct(text.latency, 90)), ms(pct(text.latency, 100)), len(text.latency), screen.DefaultPoll)
	fmt.Println("Keys typed into GRUB's command line and read back (BIOS: from the text screen; OVMF: from GRUB's echo on the serial port), by pace (pause after each key; QEMU spaces press and release 10 ms apart by itself):")
	fmt.Println()
	fmt.Println("| pace | keys | BIOS: lost or wrong | OVMF: lost or wrong | time per key |")
	fmt.Println("|---|---|---|---|---|")
	for i, d := range text.drops {
		u := "–"
		if i < len(text.uefiDrops) {
			x := text.uefiDrops[i]
			u = fmt.Sprintf("%d (%.1f %%)", x.wrong, 100*float64(x.wrong)/float64(x.typed))
		}
		fmt.Printf("| %s | %d | %d (%.1f %%) | %s | %s |\n", d.pace, d.typed, d.wrong, 100*float64(d.wrong)/float64(d.typed), u, ms(d.perKey))
	}
	fmt.Println()
	if len(shots) == 0 {
		return nil
	}
	fmt.Println("OCR (tesseract " + dpkgVersion("tesseract-ocr") + ") of graphics screens, characters right / total, per preprocessing, scale and page segmentation mode (default: " +
		fmt.Sprintf("%s, ×%d, psm %d", "runs", screen.DefaultOCRScale, screen.DefaultOCRPSM) + "):")
	fmt.Println()
	fmt.Print("| setting |")
	for _, c := range shots {
		fmt.Printf(" %s (%dx%d) |", c.name, c.w, c.h)
	}
	fmt.Println()
	fmt.Print("|---|")
	for range shots {
		fmt.Print("---|")
	}
	fmt.Println()
	var results [][]setting
	for _, c := range shots {
		r, err := sweep(ctx, c, filepath.Join(dir, "ocr.pgm"))
		if err != nil {
			return err
		}
		results = append(results, r)
	}
	for i, s := range results[0] {
		def := s.opt.Prep == "runs" && s.opt.Scale == screen.DefaultOCRScale && s.opt.PSM == screen.DefaultOCRPSM
		name := fmt.Sprintf("%s ×%d psm %d", s.opt.Prep, s.opt.Scale, s.opt.PSM)
		if def {
			name = "**" + name + "**"
		}
		fmt.Printf("| %s |", name)
		for _, r := range results {
			fmt.Printf(" %d/%d = %.1f %% (%s) |", r[i].right, r[i].total, 100*float64(r[i].right)/float64(r[i].total), ms(r[i].took))
		}
		fmt.Println()
	}
	fmt.Println()
	fmt.Fprintln(os.Stderr, "bench/screen: done at", time.Now().Format(time.TimeOnly))
	return nil
}
