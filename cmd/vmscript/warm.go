package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/warm"
)

// newWarmCmd is `vmscript warm`: the cache of warm states qemu.warm uses.
func newWarmCmd(stdout, stderr io.Writer) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "warm",
		Short: "List, remove and prune the warm states that qemu.warm restores",
		Long: `qemu.warm{start = {…}, ready = function(vm) … end} restores a guest already
brought to a state (booted, logged in) from a cache instead of booting it:
${VMSCRIPT_WARM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vmscript/warm}, bounded
by VMSCRIPT_WARM_MAX bytes (default 8 GiB; least recently used entries go
first). A state's key covers the content of every file the VM boots from,
QEMU's binary and version, the VM's options, ready's source, the values it
closes over and the Lua modules loaded: any change is a miss.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "", "the cache (default $VMSCRIPT_WARM_DIR or the user cache directory)")
	open := func() (*warm.Cache, error) {
		if dir == "" {
			dir = os.Getenv("VMSCRIPT_WARM_DIR")
		}
		c, err := warm.Open(dir, 0)
		if err != nil {
			return nil, failErr("%v", err)
		}
		return c, nil
	}
	cmd.AddCommand(warmLsCmd(stdout, open), warmRmCmd(stdout, open), warmPruneCmd(stdout, open))
	return cmd
}

func warmLsCmd(stdout io.Writer, open func() (*warm.Cache, error)) *cobra.Command {
	var explain bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the warm states, most recently used first (--explain: why the newest request of each name missed)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			entries, err := c.List()
			if err != nil {
				return failErr("%v", err)
			}
			writeWarmList(stdout, c, entries)
			if explain {
				writeWarmExplain(stdout, c, entries)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&explain, "explain", false, "for each name's newest request, say which entry it used or which inputs differ")
	return cmd
}

// writeWarmList prints the entries as a table.
func writeWarmList(w io.Writer, c *warm.Cache, entries []*warm.Entry) {
	fmt.Fprintf(w, "%s: %d states\n", c.Dir(), len(entries))
	if len(entries) == 0 {
		return
	}
	fmt.Fprintf(w, "%-12s  %-16s  %9s  %-16s  %-16s  %s\n", "KEY", "NAME", "SIZE", "MADE", "USED", "BOOT+READY")
	var total int64
	for _, e := range entries {
		total += e.Bytes()
		fmt.Fprintf(w, "%-12s  %-16s  %9s  %-16s  %-16s  %.1fs\n", e.Key.Hash[:12], e.Key.Name, sizeString(e.Bytes()),
			e.Created.Local().Format("2006-01-02 15:04"), e.LastUsed().Local().Format("2006-01-02 15:04"), e.Took.Seconds())
	}
	fmt.Fprintf(w, "total %s\n", sizeString(total))
}

// writeWarmExplain says, for each name's newest request, whether an entry
// is its state, or how the entries of that name differ.
func writeWarmExplain(w io.Writer, c *warm.Cache, entries []*warm.Entry) {
	for _, k := range c.Requests() {
		hit := false
		for _, e := range entries {
			hit = hit || e.Key.Hash == k.Hash
		}
		fmt.Fprintf(w, "\nnewest request of %q (key %s):\n", k.Name, k.Hash[:12])
		if hit {
			fmt.Fprintf(w, "  uses entry %s\n", k.Hash[:12])
			continue
		}
		for _, why := range c.Explain(k) {
			fmt.Fprintf(w, "  %s\n", why)
		}
	}
}

func warmRmCmd(stdout io.Writer, open func() (*warm.Cache, error)) *cobra.Command {
	return &cobra.Command{
		Use:   "rm KEY…",
		Short: "Remove warm states by their key (at least 4 characters of it)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			c, err := open()
			if err != nil {
				return err
			}
			for _, prefix := range args {
				gone, err := c.Remove(context.Background(), prefix)
				if err != nil {
					return failErr("%v", err)
				}
				for _, e := range gone {
					fmt.Fprintf(stdout, "removed %s (%s, %s)\n", e.Key.Hash[:12], e.Key.Name, sizeString(e.Bytes()))
				}
			}
			return nil
		},
	}
}

func warmPruneCmd(stdout io.Writer, open func() (*warm.Cache, error)) *cobra.Command {
	var max string
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove least recently used warm states until the cache fits its bound (or --max)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			bound, err := parseSize(max)
			if err != nil {
				return usageErr("--max: %v", err)
			}
			c, err := open()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			gone, err := c.Prune(ctx, bound)
			for _, e := range gone {
				fmt.Fprintf(stdout, "removed %s (%s, %s, last used %s)\n", e.Key.Hash[:12], e.Key.Name, sizeString(e.Bytes()), e.LastUsed().Local().Format("2006-01-02 15:04"))
			}
			if err != nil {
				return failErr("%v", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&max, "max", "", "bound in bytes, or with K, M, G (default: VMSCRIPT_WARM_MAX or 8G)")
	return cmd
}

// parseSize reads "1234", "500M", "8G" ("" is 0).
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with K, M or G)", s)
	}
	return n * mult, nil
}

// sizeString renders bytes as "123 MiB".
func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
