package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/lab"
)

func newLabCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Build and locate the lab guests (mini, systemd)",
		Long: `The lab guests are built from Debian packages with this machine's own apt
configuration and cached under ${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/lab/,
keyed by a hash of their inputs:

  mini     Debian kernel + busybox + dropbear initramfs; root shell "mini# " on ttyS0
  systemd  minbase Debian with systemd, networkd, sshd, sudo; a stand-in for the
           regression driven by lab.storage=, lab.lan=, lab.shutdown= on the
           kernel command line. Outputs: vmlinuz and initramfs (the whole system,
           direct kernel boot); lab.iso and lab-good.iso (GRUB on the serial
           console); live.iso and live-good.iso, shaped like a NixOS installer
           ISO: the system in /nix-store.squashfs, a busybox stage 1 that finds
           the ISO by its label, an isolinux menu under BIOS and a GRUB menu
           under UEFI whose default entry has no serial console and whose second
           entry is "(serial console=ttyS0,115200n8)"; a netboot/ tree.
           lab.iso and live.iso carry the regression's knobs, the -good ones
           every knob in its good position.

The knobs the guests read on their kernel command line (add them with
qemu.start{lab = "systemd", append_extra = "…"} or append_extra with entry=):

` + lab.KnobsText("  "),
	}
	cmd.AddCommand(newLabBuildCmd(stdout, stderr), newLabPathCmd(stdout), newLabPruneCmd(stdout))
	return cmd
}

// newLabBuildCmd is `vmscript lab build`.
func newLabBuildCmd(stdout, stderr io.Writer) *cobra.Command {
	var cacheDir string
	var force, verbose, quiet bool
	build := &cobra.Command{
		Use:       "build mini|systemd|all",
		Short:     "Build a lab guest (reusing the cache when its inputs are unchanged)",
		Args:      labNameArgs(true),
		ValidArgs: append(lab.Names(), "all"),
		RunE: func(_ *cobra.Command, args []string) error {
			names := []string{args[0]}
			if args[0] == "all" {
				names = lab.Names()
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			mode := progressNormal
			switch {
			case quiet:
				mode = progressQuiet
			case verbose:
				mode = progressVerbose
			}
			prog := newProgress(stderr, mode)
			defer prog.Close()
			for _, name := range names {
				start := time.Now()
				img, err := lab.Build(ctx, name, lab.Options{
					CacheDir: cacheDir, Force: force,
					Progress: func(stage, detail string) { prog.Stage(name, stage, detail, start) },
				})
				prog.EndStages()
				if err != nil {
					if ctx.Err() != nil {
						return &exitError{code: exitSIGINT, msg: fmt.Sprintf("lab build %s interrupted", name)}
					}
					return failErr("lab build %s: %v", name, err)
				}
				state := "built"
				if img.Cached {
					state = "cached"
				}
				fmt.Fprintf(stdout, "%s: %s in %.1fs: %s\n", name, state, time.Since(start).Seconds(), img.Dir)
				printFiles(stdout, img)
			}
			return nil
		},
	}
	build.Flags().StringVar(&cacheDir, "cache", "", "cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/lab)")
	build.Flags().BoolVar(&force, "force", false, "rebuild even when the cache is current")
	build.Flags().BoolVarP(&verbose, "verbose", "v", false, "also print a line when each stage ends (on a terminal)")
	build.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress, only the result and errors")

	return build
}

// newLabPathCmd is `vmscript lab path`.
func newLabPathCmd(stdout io.Writer) *cobra.Command {
	var cacheDir string
	var file string
	path := &cobra.Command{
		Use:   "path NAME [--file KEY]",
		Short: "Print the directory (or one file) of a built lab guest",
		Example: `  vmscript lab path mini
  vmscript lab path systemd --file iso`,
		Args:      labNameArgs(false),
		ValidArgs: lab.Names(),
		RunE: func(_ *cobra.Command, args []string) error {
			img, err := lab.Lookup(args[0], lab.Options{CacheDir: cacheDir})
			if err != nil {
				return failErr("%v", err)
			}
			if file == "" {
				fmt.Fprintln(stdout, img.Dir)
				return nil
			}
			p, ok := img.Files[file]
			if !ok {
				return usageErr("lab %s has no file %q (has: %s)", args[0], file, strings.Join(fileKeys(img), ", "))
			}
			fmt.Fprintln(stdout, p)
			return nil
		},
	}
	path.Flags().StringVar(&cacheDir, "cache", "", "cache directory")
	path.Flags().StringVar(&file, "file", "", "print the path of this output (vmlinuz, initramfs, iso, …)")

	return path
}

// newLabPruneCmd is `vmscript lab prune`.
func newLabPruneCmd(stdout io.Writer) *cobra.Command {
	var cacheDir string
	var dryRun bool
	prune := &cobra.Command{
		Use:   "prune [--dry-run]",
		Short: "Remove cached lab images built from inputs that are no longer current",
		Long: `Removes every cached image whose inputs (recipe, embedded files, Debian
package versions) are not the current ones, and the leftovers of interrupted
builds. The current images, the downloaded packages (debs/) and the resolved
package sets stay. Waits for a build in progress to end first.`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			pruned, err := lab.Prune(ctx, lab.Options{CacheDir: cacheDir}, dryRun)
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			var total int64
			for _, p := range pruned {
				fmt.Fprintf(stdout, "%s %s (%s, %.1f MB)\n", verb, p.Path, p.Why, float64(p.Bytes)/1e6)
				total += p.Bytes
			}
			if err != nil {
				return failErr("lab prune: %v", err)
			}
			fmt.Fprintf(stdout, "%s %d entries, %.1f MB\n", verb, len(pruned), float64(total)/1e6)
			return nil
		},
	}
	prune.Flags().StringVar(&cacheDir, "cache", "", "cache directory")
	prune.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be removed")
	return prune
}

func labNameArgs(allowAll bool) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		valid := lab.Names()
		if allowAll {
			valid = append(valid, "all")
		}
		if len(args) != 1 {
			return usageErr("want one lab name (%s), got %d arguments", strings.Join(valid, "|"), len(args))
		}
		for _, v := range valid {
			if args[0] == v {
				return nil
			}
		}
		return usageErr("unknown lab %q (want %s)", args[0], strings.Join(valid, "|"))
	}
}

func fileKeys(img *lab.Image) []string {
	keys := make([]string, 0, len(img.Files))
	for k := range img.Files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func printFiles(w io.Writer, img *lab.Image) {
	for _, k := range fileKeys(img) {
		fmt.Fprintf(w, "  %-12s %s\n", k, img.Files[k])
	}
}
