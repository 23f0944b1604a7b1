// Package lua embeds vmscript's shared Lua library (the files under
// vmscript/), so an installed binary finds `require "vmscript.check"` from
// any directory.
package lua

import "embed"

// Library holds vmscript/*.lua; require "vmscript.x" reads vmscript/x.lua.
//
//go:embed vmscript
var Library embed.FS
