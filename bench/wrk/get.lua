-- GET with an optional bearer token (wrk -s bench/wrk/get.lua URL).
-- BENCH_IF_NONE_MATCH: send this If-None-Match (conditional reads).
package.path = package.path .. ";bench/wrk/?.lua"
require("common")
local inm = os.getenv("BENCH_IF_NONE_MATCH")
if inm and inm ~= "" then
  wrk.headers["If-None-Match"] = inm
end
