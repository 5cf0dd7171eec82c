-- wrk script: POST /tokens only — the pure booking figure.
--
--   wrk -t2 -c64 -d10s -s loadtest/wrk/bookings-only.lua http://127.0.0.1:PORT \
--       -- D1-08,D1-09,D2-08,...
--
-- Same source distribution, unique patient ids, slot list, pacing (BENCH_RATE)
-- and report (RESULT line) as bookings.lua, with no cancel/no-show requests.
-- Responses are still handed to Lua so that per-status counts are exact; the
-- body is not parsed.

BENCH_SCRIPT_NAME = "bookings-only"
BENCH_ACTION_PCT_OVERRIDE = 0

local src = debug.getinfo(1, "S").source
local dir = (src:sub(1, 1) == "@" and src:sub(2):match("^(.*[/\\])")) or "./"
dofile(dir .. "bookings.lua")
