--- Assertions for investigation scripts. A failed check raises the
--- vmscript error shape (a table with kind = "check" and a message), so a
--- caller can pcall it and branch on the kind, and the CLI prints it with the
--- script's file:line.
---@class vmscript.check
local check = {}

---@class vmscript.CheckError
---@field kind string always "check"
---@field message string what was expected and what was found
---@field where string? file:line of the failing check

local error_mt = {
  __tostring = function(e)
    local where = e.where and (e.where .. ": ") or ""
    return where .. e.message .. " [kind=check]"
  end,
}

--- Raise a check failure located at the caller's caller.
---@param message string
local function fail(message)
  local info = debug.getinfo(3, "Sl")
  local src = info and (info.short_src or info.source)
  local where = src and (src .. ":" .. (info.currentline or 0)) or nil
  error(setmetatable({ kind = "check", message = message, where = where }, error_mt), 0)
end

--- Fail unless `value` is truthy.
---@param value any
---@param message string? what should have been true
---@return any value
function check.truthy(value, message)
  if not value then
    fail(message or "expected a true value, got " .. tostring(value))
  end
  return value
end

--- Fail unless `got == want`.
---@param got any
---@param want any
---@param message string?
function check.equal(got, want, message)
  if got ~= want then
    fail(string.format("%sexpected %s, got %s", message and (message .. ": ") or "",
      tostring(want), tostring(got)))
  end
end

--- Fail unless the string `s` contains `needle` (plain text, not a pattern).
---@param s string
---@param needle string
---@param message string?
function check.contains(s, needle, message)
  if type(s) ~= "string" or not s:find(needle, 1, true) then
    local shown = type(s) == "string" and s or tostring(s)
    if #shown > 200 then shown = shown:sub(1, 200) .. "…" end
    fail(string.format("%sexpected text containing %q, got %q", message and (message .. ": ") or "",
      needle, shown))
  end
end

return check
