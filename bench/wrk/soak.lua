-- Mixed soak load: every request picks a random user (BENCH_TOKENS, comma-separated)
-- and a random operation: list, filtered list, search, read one, create, status
-- change, notifications, health. Prints the shared BENCH_JSON line plus the number
-- of 5xx answers (4xx such as 409 on an invalid transition are expected).
package.path = package.path .. ";bench/wrk/?.lua"
require("common")

local tokens = {}
for t in string.gmatch(os.getenv("BENCH_TOKENS") or "", "[^,]+") do table.insert(tokens, t) end
local max_task = tonumber(os.getenv("BENCH_MAX_TASK") or "100")
local statuses = {"todo", "in_progress", "done"}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n5xx = 0
  math.randomseed(os.time() + math.random(1, 100000))
end

function request()
  local headers = {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}
  local pick = math.random(100)
  if pick <= 30 then
    return wrk.format("GET", "/api/tasks?per_page=20", headers)
  elseif pick <= 45 then
    return wrk.format("GET", "/api/tasks?status=todo&sort=-priority,due_at&per_page=50", headers)
  elseif pick <= 52 then
    return wrk.format("GET", "/api/tasks/search?q=task", headers)
  elseif pick <= 65 then
    return wrk.format("GET", "/api/tasks/" .. math.random(max_task), headers)
  elseif pick <= 80 then
    headers["Content-Type"] = "application/json"
    return wrk.format("POST", "/api/tasks", headers,
                      '{"title": "soak task", "priority": "high", "due_at": "2030-01-01T09:00:00+01:00"}')
  elseif pick <= 88 then
    headers["Content-Type"] = "application/json"
    return wrk.format("PATCH", "/api/tasks/" .. math.random(max_task) .. "/status", headers,
                      '{"status": "' .. statuses[math.random(#statuses)] .. '"}')
  elseif pick <= 96 then
    return wrk.format("GET", "/api/notifications?per_page=20", headers)
  else
    return wrk.format("GET", "/health")
  end
end

function response(status, headers, body)
  if status >= 500 then n5xx = n5xx + 1 end
end

local base_done = done
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("n5xx") or 0) end
  io.write(string.format("BENCH_5XX %d\n", total))
  base_done(summary, latency, requests)
end
