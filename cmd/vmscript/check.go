package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/luahost"
)

func newCheckCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "check SCRIPT.lua...",
		Short: "Compile scripts without running them and report every syntax error",
		Long: `check parses each script and prints one line per script: "FILE: ok", or
"FILE:LINE: message" for a syntax error. It exits 1 if any script has an error
and 2 if a script cannot be read.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			bad, unreadable := 0, 0
			for _, path := range args {
				if err := checkReadable(path); err != nil {
					fmt.Fprintln(stderr, err)
					unreadable++
					continue
				}
				err := luahost.Compile(path)
				var se *luahost.SyntaxError
				switch {
				case err == nil:
					fmt.Fprintf(stdout, "%s: ok\n", path)
				case errors.As(err, &se):
					fmt.Fprintln(stderr, se.Error())
					bad++
				default:
					fmt.Fprintf(stderr, "%s: %v\n", path, err)
					unreadable++
				}
			}
			switch {
			case unreadable > 0:
				return &exitError{code: exitUsage}
			case bad > 0:
				return &exitError{code: exitFail}
			}
			return nil
		},
	}
}

// checkReadable explains in one line why path is not a script it can read.
func checkReadable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s: no such script", path)
	case err != nil:
		return fmt.Errorf("%s: %v", path, err)
	case fi.IsDir():
		return fmt.Errorf("%s: is a directory, not a script", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	return f.Close()
}
