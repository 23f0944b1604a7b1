--- Half-splitting as data. A tree of questions: each node asks one
--- question, its probe gathers evidence and returns a verdict, and the
--- verdict picks the branch to follow. The runner walks the tree, writes every
--- decision to the notes with its evidence, prints the path it took and
--- turns the outcome into a `git bisect run` exit code:
---
---   0   every question on the path answered "good"
---   1   at least one answered "bad" (the fault is on that side)
---   125 no "bad", but at least one "inconclusive" (cannot tell: skip)
---
--- ```lua
--- local split = require "vmscript.split"
--- local tree = {
---   question = "Does the known-good image boot healthy under the same harness?",
---   probe = function(ctx) return "good", "lab-good.iso reached login, lease 10.0.3.16" end,
---   conclusion_bad = "Host vs guest: the harness or host is at fault",
---   branches = { good = { question = "…", probe = …, conclusion_bad = "…" } },
--- }
--- split.exit(split.run(tree, ctx))
--- ```
---@class vmscript.split
local split = {}

---@alias vmscript.Verdict "good"|"bad"|"inconclusive"

---@class vmscript.SplitNode
---@field question string the question this node answers
---@field name string? a short name for the path line (default: the question)
---@field probe fun(ctx: table): vmscript.Verdict, (string|vmscript.Evidence)? gathers evidence and decides
---@field branches table<vmscript.Verdict, vmscript.SplitNode>? the node to visit next, per verdict
---@field conclusion_good string|(fun(ctx: table, ev: vmscript.Evidence): string)? recorded when the verdict is good
---@field conclusion_bad string|(fun(ctx: table, ev: vmscript.Evidence): string)? recorded when the verdict is bad
---@field conclusion_inconclusive string|(fun(ctx: table, ev: vmscript.Evidence): string)? recorded when inconclusive

---@class vmscript.Evidence
---@field text string? what the probe saw, in a sentence or two
---@field files string[]? artifact paths (absolute or run-relative) that back it
---@field conclusion string? overrides the node's conclusion for this verdict

---@class vmscript.SplitStep
---@field question string
---@field name string
---@field verdict vmscript.Verdict
---@field evidence vmscript.Evidence
---@field conclusion string?
---@field error string? the probe's error when it raised (verdict "inconclusive")

---@class vmscript.SplitResult
---@field path vmscript.SplitStep[] the questions asked, in order
---@field conclusions string[] every conclusion recorded on the way
---@field verdict vmscript.Verdict "bad" if any step was bad, else "inconclusive" if any was, else "good"
---@field code integer 0, 1 or 125 (git bisect run)

local VERDICTS = { good = true, bad = true, inconclusive = true }

--- Normalise what a probe returned as evidence.
---@param ev any
---@return vmscript.Evidence
local function evidence_of(ev)
  if ev == nil then return { files = {} } end
  if type(ev) == "string" then return { text = ev, files = {} } end
  if type(ev) ~= "table" then return { text = tostring(ev), files = {} } end
  local files = ev.files
  if type(files) == "string" then files = { files } end
  local out = { text = ev.text, files = {}, conclusion = ev.conclusion }
  for _, f in ipairs(files or {}) do
    if type(f) == "string" and f ~= "" then out.files[#out.files + 1] = f end
  end
  return out
end

--- The conclusion text a node records for a verdict, if any.
---@param node vmscript.SplitNode
---@param verdict vmscript.Verdict
---@param ctx table
---@param ev vmscript.Evidence
---@return string?
local function conclusion_of(node, verdict, ctx, ev)
  if ev.conclusion then return ev.conclusion end
  local c = node["conclusion_" .. verdict]
  if type(c) == "function" then return c(ctx, ev) end
  return c
end

--- Run a probe, turning a raised error into an inconclusive verdict.
---@param node vmscript.SplitNode
---@param ctx table
---@return vmscript.Verdict, vmscript.Evidence, string?
local function probe(node, ctx)
  local ok, verdict, ev = pcall(node.probe, ctx)
  if not ok then
    local msg = tostring(verdict)
    return "inconclusive", { text = "the probe failed: " .. msg, files = {} }, msg
  end
  if not VERDICTS[verdict] then
    local msg = "probe returned " .. tostring(verdict) .. ", want good, bad or inconclusive"
    return "inconclusive", { text = msg, files = {} }, msg
  end
  return verdict, evidence_of(ev), nil
end

--- Walk the tree from `root`, recording each decision in the notes.
--- Options: `title` (names the walk in the outcome step, default "the half-splitting"),
--- `print` (default true: print each decision and the path),
--- `max_steps` (default 50, a guard against cycles).
---@param root vmscript.SplitNode
---@param ctx table? passed to every probe (default {})
---@param opts {title?: string, print?: boolean, max_steps?: integer}?
---@return vmscript.SplitResult
function split.run(root, ctx, opts)
  ctx = ctx or {}
  opts = opts or {}
  local say = opts.print ~= false and print or function() end
  local result = { path = {}, conclusions = {}, verdict = "good", code = 0 }
  local node = root
  local n = 0
  while node do
    n = n + 1
    if n > (opts.max_steps or 50) then error("split: more than " .. (opts.max_steps or 50) .. " steps; is the tree cyclic?") end
    assert(type(node.question) == "string", "split: a node needs a question")
    assert(type(node.probe) == "function", "split: node " .. node.question .. " needs a probe function")
    notes.step(string.format("Split %d: %s", n, node.question))
    local verdict, ev, err = probe(node, ctx)
    local step = { question = node.question, name = node.name or node.question, verdict = verdict,
      evidence = ev, error = err }
    local text = string.format("Verdict: %s%s", verdict:upper(), ev.text and (" — " .. ev.text) or "")
    if #ev.files > 0 then
      notes.observe(text, { evidence = ev.files })
    else
      notes.observe(text)
    end
    local c = conclusion_of(node, verdict, ctx, ev)
    if c then
      step.conclusion = c
      result.conclusions[#result.conclusions + 1] = c
      notes.conclude(c)
    end
    result.path[#result.path + 1] = step
    say(string.format("split %d: %s -> %s%s", n, step.name, verdict, c and (": " .. c) or ""))
    if verdict == "bad" then
      result.verdict = "bad"
    elseif verdict == "inconclusive" and result.verdict == "good" then
      result.verdict = "inconclusive"
    end
    node = node.branches and node.branches[verdict] or nil
  end
  result.code = ({ good = 0, bad = 1, inconclusive = 125 })[result.verdict]
  local names = {}
  for _, s in ipairs(result.path) do names[#names + 1] = s.name .. "=" .. s.verdict end
  local line = "path: " .. table.concat(names, " -> ")
  say(line)
  say(string.format("verdict: %s (exit %d)", result.verdict, result.code))
  notes.step("Outcome of " .. (opts.title or "the half-splitting"))
  notes.observe(line)
  notes.conclude(string.format("Overall: %s (git bisect exit %d)%s", result.verdict, result.code,
    #result.conclusions > 0 and (": " .. table.concat(result.conclusions, " | ")) or ""))
  return result
end

--- End the script with the result's exit code (0 good, 1 bad, 125 skip).
---@param result vmscript.SplitResult
function split.exit(result)
  vmscript.exit(result.code)
end

--- Build a linear chain: each node's every verdict leads to the next node
--- (unless the node already has a branch for that verdict). Returns the first.
---@param nodes vmscript.SplitNode[]
---@return vmscript.SplitNode
function split.chain(nodes)
  for i = 1, #nodes - 1 do
    local b = nodes[i].branches or {}
    for v in pairs(VERDICTS) do
      if b[v] == nil then b[v] = nodes[i + 1] end
    end
    nodes[i].branches = b
  end
  return nodes[1]
end

return split
