-- POST a JSON body (BENCH_BODY) with an optional bearer token.
package.path = package.path .. ";bench/wrk/?.lua"
require("common")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("BENCH_BODY") or '{"title": "bench task"}'
