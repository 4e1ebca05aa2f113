-- wrk script: POST the file named by $BENCH_IMAGE as multipart field "image".
local path = os.getenv("BENCH_IMAGE")
local f = assert(io.open(path, "rb"))
local data = f:read("*all")
f:close()
local boundary = "----modelservebench"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.body = "--" .. boundary .. "\r\n"
  .. 'Content-Disposition: form-data; name="image"; filename="cell.png"\r\n'
  .. "Content-Type: image/png\r\n\r\n"
  .. data .. "\r\n--" .. boundary .. "--\r\n"

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
