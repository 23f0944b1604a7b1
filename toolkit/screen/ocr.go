package screen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vmscript/vmscript/toolkit/vmerr"
)

// OCR defaults, from bench/screen (characters right with "runs", ×2, psm
// 6: GRUB under OVMF 98.0 %, the Debian installer's vesamenu 98.4 %, iPXE
// under OVMF 94.9 %, which loses mostly 0/O, 7/?, 1/l and blanks around
// ':' and '(' in hex strings; 0.3–0.9 s a screen on 2 cores under TCG
// load; ×1 was 2–13 points worse on GRUB or vesamenu, ×3 no better and
// 1.5× slower, psm 3 and 11 worse on vesamenu and iPXE, the plain
// luminance 5 points worse on GRUB's highlighted entry).
const (
	DefaultOCRCommand = "tesseract"
	DefaultOCRLang    = "eng"
	DefaultOCRPSM     = 6
	DefaultOCRScale   = 2
	DefaultOCRTimeout = 30 * time.Second
)

// OCROptions configure the reading of graphics modes.
type OCROptions struct {
	// Command is the tesseract program (default "tesseract", package
	// tesseract-ocr).
	Command string
	// Lang is the language data (default "eng", package tesseract-ocr-eng).
	Lang string
	// PSM is tesseract's page segmentation mode (default DefaultOCRPSM).
	PSM int
	// Scale enlarges the screen this many times before OCR (default
	// DefaultOCRScale; 1 leaves it).
	Scale int
	// Prep is the preprocessing: "runs" (default: each pixel by its colour
	// distance from its background, so text is dark on white whatever its
	// colours) or "gray" (luminance only).
	Prep string
	// Timeout bounds one OCR run (default DefaultOCRTimeout).
	Timeout time.Duration
	// Args are more tesseract arguments ("-c", "name=value", …).
	Args []string
}

func (o OCROptions) withDefaults() OCROptions {
	if o.Command == "" {
		o.Command = DefaultOCRCommand
	}
	if o.Lang == "" {
		o.Lang = DefaultOCRLang
	}
	if o.PSM == 0 {
		o.PSM = DefaultOCRPSM
	}
	if o.Scale <= 0 {
		o.Scale = DefaultOCRScale
	}
	if o.Prep == "" {
		o.Prep = "runs"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultOCRTimeout
	}
	return o
}

// recognise reads the text of a screendump with tesseract.
func (s *Screen) recognise(ctx context.Context, img *image) ([]string, error) {
	return OCR(ctx, s.ocr, img.w, img.h, img.pix, filepath.Join(s.dir, "ocr.pgm"))
}

// OCR reads the text of an RGB image (w×h, 3 bytes a pixel) with
// tesseract, preprocessed as opt says; tmp is the file the preprocessed
// image is written to. It returns the non-empty lines.
func OCR(ctx context.Context, opt OCROptions, w, h int, rgb []byte, tmp string) ([]string, error) {
	opt = opt.withDefaults()
	gray, gw, gh := preprocess(opt, w, h, rgb)
	var pgm bytes.Buffer
	fmt.Fprintf(&pgm, "P5\n%d %d\n255\n", gw, gh)
	pgm.Write(gray)
	if err := os.WriteFile(tmp, pgm.Bytes(), 0o600); err != nil {
		return nil, vmerr.Wrap(vmerr.IO, err, "screen: OCR input")
	}
	ctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	args := append([]string{tmp, "stdout", "-l", opt.Lang, "--psm", strconv.Itoa(opt.PSM)}, opt.Args...)
	cmd := exec.CommandContext(ctx, opt.Command, args...)
	// One thread: on a machine busy with emulated CPUs, OpenMP threads cost
	// more than they give.
	cmd.Env = append(os.Environ(), "OMP_THREAD_LIMIT=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.Error
		if errors.As(err, &ee) {
			return nil, vmerr.Wrap(vmerr.NotFound, err, "screen: OCR needs %s (package tesseract-ocr)", opt.Command)
		}
		if ctx.Err() != nil {
			return nil, vmerr.Wrap(vmerr.DoneKind(ctx), ctx.Err(), "screen: OCR")
		}
		return nil, vmerr.Wrap(vmerr.IO, err, "screen: OCR: %s", strings.TrimSpace(stderr.String()))
	}
	var lines []string
	for _, l := range strings.Split(stdout.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && l != "\f" {
			lines = append(lines, typographic.Replace(l))
		}
	}
	return lines, nil
}
