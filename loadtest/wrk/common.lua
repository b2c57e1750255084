-- Shared by the wrk scripts of loadtest/http_wrk.py (loaded with dofile; wrk runs one
-- script per thread, each thread its own Lua state).
-- Arguments after `--`: KEY BASE_US THREADS [ROBOTS]: the API key, a start time in epoch
-- microseconds (ingest100's first timestamp), the wrk thread count, and how many robots (ids
-- "1".."N") are registered.

local M = {}

local counter = 0
local second = 0
local thread_id = 0

function M.setup_thread(thread)
  -- runs in the main state: hand every thread its index
  M.threads = (M.threads or 0) + 1
  thread:set("thread_id", M.threads - 1)
end

function M.init(args)
  M.key = args[1]
  M.base_us = tonumber(args[2])
  M.nthreads = tonumber(args[3])
  M.robots = tonumber(args[4] or "10")
  thread_id = _G.thread_id or 0
  math.randomseed(1000 + thread_id)
  M.headers = { ["X-API-Key"] = M.key, ["Content-Type"] = "application/json" }
  M.get_headers = { ["X-API-Key"] = M.key }
end

-- A timestamp in the second the request is sent, as a robot stamps its readings with its
-- clock, that no other request of this run (any thread) uses: one microsecond per request
-- from the second's start, interleaved between threads (wrk sends a few thousand a second).
-- Runs start in a new second (loadtest/http_wrk.py), so they never share one. (Until round
-- 11 these were one microsecond apart from the run's start, so a whole run's readings fell
-- into the same minute of reading time, which no fleet does.)
function M.next_us()
  local now = os.time()
  if now ~= second then
    second, counter = now, 0
  end
  counter = counter + 1
  return now * 1000000 + counter * M.nthreads + thread_id
end

function M.iso(us, zone)
  local s = math.floor(us / 1000000)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%06d", us % 1000000) .. zone
end

function M.robot()
  return tostring(math.random(1, M.robots))
end

function M.post(path, body)
  return wrk.format("POST", path, M.headers, body)
end

function M.get(path)
  return wrk.format("GET", path, M.get_headers)
end

-- `picks` is a list of {weight, function() return request end}
function M.weighted(picks)
  local table_ = {}
  for _, p in ipairs(picks) do
    for _ = 1, p[1] do table_[#table_ + 1] = p[2] end
  end
  return function() return table_[math.random(1, #table_)]() end
end

-- One JSON line on stdout that loadtest/http_wrk.py reads.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, ' ..
    '"read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end

return M
