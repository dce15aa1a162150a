-- GET with an optional bearer token (wrk -s bench/wrk/get.lua URL).
-- BENCH_IF_NONE_MATCH: send this If-None-Match (conditional reads).
package.path = package.path .. ";bench/wrk/?.lua"
require("common")
local inm = os.getenv("BENCH_IF_NONE_MATCH")
if inm and inm ~= "" then
  wrk.headers["If-None-Match"] = inm
end

-- count 304 answers (BENCH_304 line), so a conditional run shows how many reads the
-- ETag actually saved
local threads = {}
local common_done = done
n304 = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status == 304 then
    n304 = n304 + 1
  end
end

function done(summary, latency, requests)
  common_done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (thread:get("n304") or 0) end
  io.write(string.format("BENCH_304 %d\n", total))
end
