package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/vmscript/vmscript/toolkit/luahost"
)

//go:generate go run . doc --markdown -o ../../docs/api.md
//go:generate go run . doc --luacats -o ../../lua/types/vmscript.lua

func newDocCmd(stdout io.Writer) *cobra.Command {
	var markdown, luacats bool
	var out string
	cmd := &cobra.Command{
		Use:   "doc [module[.function] | class[:method] | type]",
		Short: "Print the Lua API reference (from the same registrations the bindings use)",
		Long: `doc prints the reference of every module and object of the Lua API, or of
one: "vmscript doc qemu", "vmscript doc qemu.start", "vmscript doc console:expect",
"vmscript doc vmscript.QemuStartOpts".

--markdown prints docs/api.md and --luacats the LuaCATS annotations
(lua/types/vmscript.lua) for lua-language-server; "make docs" regenerates both.`,
		Args: cobra.MaximumNArgs(1),
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return docTopics(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			var text string
			switch {
			case markdown && luacats:
				return usageErr("--markdown and --luacats are exclusive")
			case markdown:
				text = luahost.Markdown()
			case luacats:
				text = luahost.LuaCATS()
			default:
				topic := ""
				if len(args) == 1 {
					topic = args[0]
				}
				var b strings.Builder
				if !luahost.WriteReference(&b, topic) {
					return usageErr("doc: %q is no module, function, object, method or type (try: vmscript doc)", topic)
				}
				text = b.String()
			}
			if out != "" {
				if err := writeFileAtomic(out, []byte(text)); err != nil {
					return failErr("doc: %v", err)
				}
				return nil
			}
			_, err := io.WriteString(stdout, text)
			return err
		},
	}
	cmd.Flags().BoolVar(&markdown, "markdown", false, "print the reference as Markdown (docs/api.md)")
	cmd.Flags().BoolVar(&luacats, "luacats", false, "print LuaCATS annotations (lua/types/vmscript.lua)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of standard output")
	return cmd
}

// docTopics lists what `vmscript doc` accepts, for shell completion.
func docTopics() []string {
	var out []string
	for _, m := range luahost.Modules() {
		out = append(out, m.Name)
		for _, f := range m.Funcs {
			out = append(out, m.Name+"."+f.Name)
		}
	}
	for _, c := range luahost.Classes() {
		out = append(out, c.Name)
		for _, f := range c.Methods {
			out = append(out, fmt.Sprintf("%s:%s", c.Name, f.Name))
		}
	}
	for _, t := range luahost.Types() {
		out = append(out, t.Name)
	}
	return out
}
