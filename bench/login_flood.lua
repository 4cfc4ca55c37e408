-- Anonymous login flood: one million `GET /auth/login` (docs/security.md,
-- section 14, "Measured"). Each of the 2 threads stops after 500 000
-- responses; compare the gateway's VmRSS/VmHWM (/proc/PID/status) and the
-- store's files before and after.
--
--   target/release/portcullis demo --listen 127.0.0.1:PORT --admin-listen 127.0.0.1:APORT --data-dir DIR &
--   wrk -t2 -c32 -d600s -s bench/login_flood.lua http://127.0.0.1:PORT
--
-- wrk waits out -d even after every thread stopped; the count is what matters.
local per_thread = 500000
local seen, not_302 = 0, 0

request = function()
  return wrk.format("GET", "/auth/login?return_to=/app")
end

response = function(status, headers, body)
  seen = seen + 1
  if status ~= 302 then not_302 = not_302 + 1 end
  if seen >= per_thread then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("requests %d; 4xx/5xx %d; connect %d, read %d, write %d, timeout %d\n",
    summary.requests, e.status, e.connect, e.read, e.write, e.timeout))
end
