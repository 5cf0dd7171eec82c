-- wrk script: realistic OPD token traffic against the OPD Token Engine.
--
--   wrk -t2 -c64 -d10s -s loadtest/wrk/bookings.lua http://127.0.0.1:PORT \
--       -- D1-08,D1-09,D2-08,...
--
-- Every request is one of:
--   * POST /tokens  {"patientId","slotId","source"} — a new booking. Sources are
--     drawn WALK_IN 35% / ONLINE 35% / FOLLOW_UP 15% / PAID 10% / EMERGENCY 5%;
--     the slot is drawn uniformly from the slot list; the patient id is unique
--     per request (run id + wrk thread + counter), so DUPLICATE_BOOKING
--     conflicts do not dominate the figures.
--   * POST /tokens/{id}/cancel or /no-show (BENCH_ACTION_PCT, default 15% of
--     requests: two thirds cancel, one third no-show) on a token this thread
--     created earlier. Token ids are read from earlier 201 responses in
--     response(); a token is used at most once. A no-show is only sent for a
--     token last seen ALLOCATED (a WAITLISTED one is cancelled instead). When
--     the thread knows no token yet, a booking is sent instead.
--
-- Configuration (environment variables, or script arguments after `--`):
--   slot list     first script argument, comma-separated, or BENCH_SLOTS;
--                 default: D1-09
--   BENCH_ACTION_PCT   percentage of cancel/no-show requests (default 15;
--                      loadtest/wrk/bookings-only.lua forces 0)
--   BENCH_RUN_ID       prefix of the patient ids (default: time + random), so
--                      several runs against one server never collide
--   BENCH_RATE         if set: target total requests/s; a pacer in delay()
--                      spreads sends evenly (latency pass, see loadtest/README.md)
--   BENCH_THREADS      wrk -t value, needed by the pacer (default 2)
--
-- Output: wrk's own summary, then per-status counts and one machine-readable
-- line:
--   RESULT script=bookings requests=N duration_s=S rps=R p50_ms=.. p90_ms=..
--          p99_ms=.. max_ms=.. non2xx=N socket_errors=N statuses=201:N,...
--          errors=409/INVALID_TRANSITION:N,...   (non-2xx by problem `code`)
-- non2xx counts every response outside 200-299 (wrk's own "Non-2xx or 3xx"
-- line counts only >399); socket_errors = connect+read+write+timeout.

local SCRIPT_NAME = BENCH_SCRIPT_NAME or "bookings"
local ACTION_PCT = BENCH_ACTION_PCT_OVERRIDE
  or tonumber(os.getenv("BENCH_ACTION_PCT") or "") or 15

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- Cumulative source distribution (percent).
local SOURCES = {
  { "WALK_IN", 35 }, { "ONLINE", 70 }, { "FOLLOW_UP", 85 },
  { "PAID", 95 }, { "EMERGENCY", 100 },
}

local function split_csv(s)
  local out = {}
  for item in string.gmatch(s or "", "[^,%s]+") do out[#out + 1] = item end
  return out
end

---------------------------------------------------------------------------
-- setup / done run in wrk's main Lua state.
---------------------------------------------------------------------------
local threads = {}
-- Global (not local): setup() copies the main state's value into each thread.
run_id = os.getenv("BENCH_RUN_ID")
if run_id == nil or run_id == "" then
  math.randomseed(os.time())
  run_id = string.format("%x%04x", os.time() % 0xffffff, math.random(0, 0xffff))
end

function setup(thread)
  thread:set("thread_id", #threads + 1)
  thread:set("run_id", run_id)
  threads[#threads + 1] = thread
end

---------------------------------------------------------------------------
-- Per-thread state (each wrk thread has its own Lua state).
---------------------------------------------------------------------------
thread_id = thread_id or 0
status_counts = {}   -- [status code] = count, read by done()
code_counts = {}     -- ["409/WAITLIST_FULL"] = count (non-2xx only)
sent = { book = 0, cancel = 0, noshow = 0 }

local slots, nslots
local counter = 0
local pool, npool = {}, 0  -- token ids this thread may act on
local state = {}           -- token id -> "A" (allocated) / "W" (waitlisted)
local POOL_MAX = 20000

function init(args)
  slots = split_csv(args and args[1])
  if #slots == 0 then slots = split_csv(os.getenv("BENCH_SLOTS")) end
  if #slots == 0 then slots = { "D1-09" } end
  nslots = #slots
  math.randomseed(os.time() * 1000 + thread_id * 7919)
  -- Warm the generator (LuaJIT's first draws after seeding are correlated).
  for _ = 1, 10 do math.random() end
end

local function pick_source()
  local r = math.random(100)
  for i = 1, #SOURCES do
    if r <= SOURCES[i][2] then return SOURCES[i][1] end
  end
  return "WALK_IN"
end

local function booking()
  counter = counter + 1
  sent.book = sent.book + 1
  local body = '{"patientId":"P' .. run_id .. "-" .. thread_id .. "-" .. counter
    .. '","slotId":"' .. slots[math.random(nslots)]
    .. '","source":"' .. pick_source() .. '"}'
  return wrk.format("POST", "/tokens", nil, body)
end

local function take_token()
  if npool == 0 then return nil end
  local k = math.random(npool)
  local id = pool[k]
  pool[k] = pool[npool]
  pool[npool] = nil
  npool = npool - 1
  local st = state[id]
  state[id] = nil
  return id, st
end

function request()
  if ACTION_PCT > 0 and npool > 0 and math.random() * 100 < ACTION_PCT then
    local id, st = take_token()
    if math.random(3) == 3 and st == "A" then
      sent.noshow = sent.noshow + 1
      return wrk.format("POST", "/tokens/" .. id .. "/no-show", nil, nil)
    end
    sent.cancel = sent.cancel + 1
    return wrk.format("POST", "/tokens/" .. id .. "/cancel", nil, nil)
  end
  return booking()
end

local STATUS_CODE = { ALLOCATED = "A", WAITLISTED = "W" }

-- Side effects reported in `changes`: bumps, promotions, demotions of tokens
-- this thread holds.
local function apply_changes(body)
  if string.find(body, '"changes":[]', 1, true) then return end
  for obj in string.gmatch(body, "{[^{}]-\"to\"[^{}]-}") do
    local id = string.match(obj, '"tokenId"%s*:%s*"([^"]+)"')
    if id and state[id] then
      local to = string.match(obj, '"to"%s*:%s*"([^"]+)"')
      state[id] = STATUS_CODE[to] or state[id]
    end
  end
end

function response(status, headers, body)
  status_counts[status] = (status_counts[status] or 0) + 1
  if status < 200 or status > 299 then
    -- problem+json `code`, e.g. 409/INVALID_TRANSITION, 409/WAITLIST_FULL
    local key = status .. "/" .. (string.match(body or "", '"code"%s*:%s*"([%w_]+)"') or "-")
    code_counts[key] = (code_counts[key] or 0) + 1
    return
  end
  if ACTION_PCT <= 0 then return end
  if status == 201 then
    local tok = string.match(body, '"token"%s*:%s*(%b{})')
    if tok then
      local id = string.match(tok, '"tokenId"%s*:%s*"([^"]+)"')
      local st = STATUS_CODE[string.match(tok, '"status"%s*:%s*"([^"]+)"')]
      if id and st then
        if npool >= POOL_MAX then take_token() end
        npool = npool + 1
        pool[npool] = id
        state[id] = st
      end
    end
    apply_changes(body)
  elseif status == 200 then
    apply_changes(body)
  end
end

-- With BENCH_RATE set, pace sends at that total rate: each thread hands out
-- send times spaced 1/rate apart and delay() returns the wait until the slot.
-- wrk starts the latency clock when the request is written, after the delay.
local rate = tonumber(os.getenv("BENCH_RATE") or "")
if rate and rate > 0 then
  local ok_ffi, ffi = pcall(require, "ffi")
  local now_ms
  if ok_ffi then
    pcall(ffi.cdef, [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec_t;
      int clock_gettime(int clk, bench_timespec_t *tp);
    ]])
    local ts = ffi.new("bench_timespec_t")
    now_ms = function()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
    end
  end
  local nthreads = tonumber(os.getenv("BENCH_THREADS") or "") or 2
  local interval = 1000 * nthreads / rate -- ms between sends, per thread
  local next_free = 0
  if now_ms then
    function delay()
      local now = now_ms()
      local at = next_free > now and next_free or now
      next_free = at + interval
      local wait = at - now
      local whole = math.floor(wait)
      if math.random() < wait - whole then whole = whole + 1 end
      return whole
    end
  else
    -- No clock: fixed think time per connection (less exact).
    local conns = tonumber(os.getenv("BENCH_CONNS_PER_THREAD") or "") or 8
    local think = conns * interval
    function delay()
      local whole = math.floor(think)
      if math.random() < think - whole then whole = whole + 1 end
      return whole
    end
  end
end

---------------------------------------------------------------------------
-- Report.
---------------------------------------------------------------------------
function done(summary, latency, requests)
  local counts, kinds, errcodes = {}, { book = 0, cancel = 0, noshow = 0 }, {}
  for _, t in ipairs(threads) do
    local c = t:get("status_counts") or {}
    for k, v in pairs(c) do counts[k] = (counts[k] or 0) + v end
    local ec = t:get("code_counts") or {}
    for k, v in pairs(ec) do errcodes[k] = (errcodes[k] or 0) + v end
    local s = t:get("sent") or {}
    for k, v in pairs(s) do kinds[k] = (kinds[k] or 0) + v end
  end
  local codes, non2xx, parts = {}, 0, {}
  for k in pairs(counts) do codes[#codes + 1] = k end
  table.sort(codes)
  for _, k in ipairs(codes) do
    parts[#parts + 1] = k .. ":" .. counts[k]
    if k < 200 or k > 299 then non2xx = non2xx + counts[k] end
  end
  local e = summary.errors
  local sock = e.connect + e.read + e.write + e.timeout
  local secs = summary.duration / 1e6
  local rps = summary.requests / secs
  local function ms(p) return latency:percentile(p) / 1000 end

  io.write(string.format(
    "  requests sent by kind: book=%d cancel=%d no-show=%d\n",
    kinds.book, kinds.cancel, kinds.noshow))
  io.write("  responses by status: " .. (#parts > 0 and table.concat(parts, " ") or "none") .. "\n")
  local ekeys, eparts = {}, {}
  for k in pairs(errcodes) do ekeys[#ekeys + 1] = k end
  table.sort(ekeys)
  for _, k in ipairs(ekeys) do
    io.write(string.format("  non-2xx %s: %d\n", k, errcodes[k]))
    eparts[#eparts + 1] = k .. ":" .. errcodes[k]
  end
  io.write(string.format(
    "RESULT script=%s requests=%d duration_s=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f "
      .. "p99_ms=%.3f max_ms=%.3f non2xx=%d socket_errors=%d statuses=%s errors=%s\n",
    SCRIPT_NAME, summary.requests, secs, rps, ms(50), ms(90), ms(99),
    latency.max / 1000, non2xx, sock,
    #parts > 0 and table.concat(parts, ",") or "none",
    #eparts > 0 and table.concat(eparts, ",") or "none"))
end
