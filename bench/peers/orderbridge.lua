-- wrk script for orderbridge in the peers' benchmark (scripts/bench-peers.sh).
--
-- Like the peers' order.lua it POSTs order.json and prints the same one-line JSON
-- summary, but every request is a different order with a valid signature: the daemon
-- answers a repeated external id with "duplicate" and no work, and refuses unsigned
-- requests. The requests come from a pool that `orderbridge bench --wrk-pool` signed
-- just before this run ($ORDERBRIDGE_POOL): a body template plus one line
-- "<suffix> <webhook-signature>" per request. Each thread reads the lines as it sends
-- (buffered reads, no pool in memory, so a pool for 20,000 requests/s costs wrk no
-- memory and no start-up time) and rebuilds the body from the template.
--
-- Each of the $ORDERBRIDGE_POOL_THREADS wrk threads takes every Nth line, so the threads
-- never send the same order. A thread that runs out starts over and counts the
-- repeats; done() reports them on stderr (those requests are duplicates, so the
-- sink check of the run turns negative too).

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local function fail(msg)
  io.stderr:write("orderbridge.lua: " .. msg .. "\n")
  os.exit(2)
end

local pool, data_start, nthreads, line_no, served_this_pass
local parts, id_prefix
-- Globals, so that done() can read them from each thread (thread:get).
pool_sent, pool_repeats = 0, 0

function init(args)
  local path = os.getenv("ORDERBRIDGE_POOL") or fail("set ORDERBRIDGE_POOL to a pool file")
  nthreads = tonumber(os.getenv("ORDERBRIDGE_POOL_THREADS") or "") or fail("set ORDERBRIDGE_POOL_THREADS")
  pool = io.open(path, "rb") or fail("cannot open " .. path)
  local header = {}
  if pool:read("*l") ~= "orderbridge-wrk-pool 1" then fail(path .. " is not an orderbridge wrk pool") end
  while true do
    local line = pool:read("*l") or fail(path .. ": truncated header")
    local k, v = line:match("^(%S+) (.*)$")
    if not k then fail(path .. ": bad header line") end
    header[k] = v
    if k == "body-bytes" then break end
  end
  local template = pool:read(tonumber(header["body-bytes"]))
  pool:read("*l") -- the newline after the template
  data_start = pool:seek()
  line_no, served_this_pass = 0, 0
  id_prefix = header["webhook-id-prefix"]

  -- The template split at the placeholder: body = parts[1] .. suffix .. parts[2] ...
  local ph, pos = header["placeholder"], 1
  parts = {}
  while true do
    local a, b = template:find(ph, pos, true)
    if not a then break end
    table.insert(parts, template:sub(pos, a - 1))
    pos = b + 1
  end
  table.insert(parts, template:sub(pos))

  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["webhook-timestamp"] = header["timestamp"]
end

-- The next line of this thread's share (line_no % nthreads == tid).
local function next_entry()
  while true do
    local line = pool:read("*l")
    if not line then
      if served_this_pass == 0 then fail("the pool has no requests for thread " .. tid) end
      pool:seek("set", data_start)
      pool_repeats = pool_repeats + 1
      line_no, served_this_pass = 0, 0
    else
      line_no = line_no + 1
      if (line_no - 1) % nthreads == tid then
        served_this_pass = served_this_pass + 1
        return line
      end
    end
  end
end

function request()
  local suffix, sig = next_entry():match("^(%S+) (%S+)$")
  pool_sent = pool_sent + 1
  wrk.headers["webhook-id"] = id_prefix .. suffix
  wrk.headers["webhook-signature"] = sig
  return wrk.format(nil, nil, nil, table.concat(parts, suffix))
end

function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    if t:get("pool_repeats") > 0 then
      io.stderr:write(string.format("orderbridge.lua: thread %d ran through the pool and started over" ..
        " (%d requests sent): repeats are answered as duplicates; make the pool larger (POOL_RATE)\n",
        t:get("tid"), t:get("pool_sent")))
    end
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
