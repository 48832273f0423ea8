-- wrk script for bench/intake_bench.py: POSTs pre-signed CallRail webhooks and records the
-- latency of every response itself, in closed loop or at a fixed rate (open loop).
--
-- Run with as many wrk threads as connections (-t N -c N): each thread then drives exactly
-- one connection, so its Lua state knows which request a response belongs to.
--
-- Environment (set by intake_bench.py):
--   BENCH_BODIES_DIR  folder of body-<k>.txt files, lines "<signature>\t<json body>"
--   BENCH_FILES       how many body files there are
--   BENCH_THREADS     the -t/-c value, so thread i takes the files k with k % threads == i
--   BENCH_PATH        the request path
--   BENCH_RATE        total requests/s for a fixed-rate run; 0 (or unset) for closed loop
--   BENCH_OUT         where done() writes the raw results
--
-- Fixed rate works like wrk2: connection i sends request k at t0 + (k + i / threads) * interval
-- with interval = threads / rate. Latency is measured from that intended send time (or from
-- the real send time when the timer fired a little early), so a stalled server is charged for
-- the requests it kept waiting: no coordinated omission.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
int clock_gettime(int clk_id, bench_timespec_t *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec_t")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000000 + tonumber(timespec.tv_nsec) / 1000
end

local bodies_dir = os.getenv("BENCH_BODIES_DIR")
local file_count = tonumber(os.getenv("BENCH_FILES") or "0")
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local path = os.getenv("BENCH_PATH") or "/"
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local out_path = os.getenv("BENCH_OUT")

-- main state: the list of threads, read back in done()
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- thread state
local requests = {}
local request_count = 0
local cursor = 1
local sent_at = 0
local intended_at = nil
local next_at = nil
local interval_us = 0
lat = {}      -- latency of each 202, microseconds (from the intended time at a fixed rate)
svc = {}      -- latency of each 202 from the real send time (service time)
codes = {}    -- status -> count
id = id or 0

function init(args)
  for k = 0, file_count - 1 do
    if k % thread_count == id then
      local name = string.format("%s/body-%d.txt", bodies_dir, k)
      for line in io.lines(name) do
        local tab = string.find(line, "\t", 1, true)
        if tab then
          local signature = string.sub(line, 1, tab - 1)
          local body = string.sub(line, tab + 1)
          request_count = request_count + 1
          requests[request_count] = wrk.format("POST", path, {
            ["Content-Type"] = "application/json",
            ["User-Agent"] = "CallRail Webhooks",
            ["Signature"] = signature,
          }, body)
        end
      end
    end
  end
  if request_count == 0 then
    error("no request bodies for thread " .. id .. " in " .. tostring(bodies_dir))
  end
  if rate > 0 then
    interval_us = 1000000 * thread_count / rate
  end
end

function request()
  local r = requests[cursor]
  cursor = cursor % request_count + 1
  sent_at = now_us()
  return r
end

if rate > 0 then
  function delay()
    local now = now_us()
    if next_at == nil then
      next_at = now + interval_us * id / thread_count
    else
      next_at = next_at + interval_us
    end
    intended_at = next_at
    local wait_ms = math.floor((next_at - now) / 1000)
    if wait_ms < 0 then
      return 0
    end
    return wait_ms
  end
end

function response(status, headers, body)
  local now = now_us()
  codes[status] = (codes[status] or 0) + 1
  if status == 202 then
    local start = sent_at
    if intended_at ~= nil and intended_at < sent_at then
      start = intended_at
    end
    lat[#lat + 1] = now - start
    svc[#svc + 1] = now - sent_at
  end
end

function done(summary, latency, reqs)
  local out = assert(io.open(out_path, "w"))
  out:write(string.format("duration_us %d\n", summary.duration))
  out:write(string.format("requests %d\n", summary.requests))
  local e = summary.errors
  out:write(string.format("socket_errors %d %d %d %d\n", e.connect, e.read, e.write, e.timeout))
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes")) do
      out:write(string.format("code %d %d\n", status, count))
    end
    local t_lat = thread:get("lat")
    local t_svc = thread:get("svc")
    for i = 1, #t_lat do
      out:write(string.format("lat %d %d\n", t_lat[i], t_svc[i]))
    end
  end
  out:close()
end
