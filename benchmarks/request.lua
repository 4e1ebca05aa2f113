-- wrk script for every benchmark: one request, described by environment variables.
--   BENCH_METHOD (GET), BENCH_BODY_FILE (no body), BENCH_CONTENT_TYPE, BENCH_HEADERS, BENCH_DELAY_MS (0: no pacing),
--   BENCH_HONOR_RETRY_AFTER (1: after a 503, the thread's next request waits Retry-After seconds,
--   like a well-behaved client; wrk's delay() is per thread, so this approximates per-connection backoff)
-- Prints one RESULT line; "shed" counts 503 answers (backpressure) among the non-2xx ones.
wrk.method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_BODY_FILE")
if path and path ~= "" then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*all")
  f:close()
end
local content_type = os.getenv("BENCH_CONTENT_TYPE")
if content_type and content_type ~= "" then
  wrk.headers["Content-Type"] = content_type
end
-- BENCH_HEADERS: extra "Name: value" lines, separated by newlines.
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local honor_retry_after = os.getenv("BENCH_HONOR_RETRY_AFTER") == "1"
local backoff = 0
if pause > 0 or honor_retry_after then
  function delay()
    local wait = pause + backoff
    backoff = 0
    return wait
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) shed = 0 end
function response(status, headers, body)
  if status == 503 then
    shed = shed + 1
    if honor_retry_after then backoff = 1000 * (tonumber(headers["Retry-After"]) or 1) end
  end
end

done = function(summary, latency, requests)
  local total_shed = 0
  for _, thread in ipairs(threads) do total_shed = total_shed + thread:get("shed") end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d non2xx=%d shed=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    summary.errors.status, total_shed,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
