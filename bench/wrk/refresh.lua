-- The refresh_token grant. Each wrk thread takes its share of the refresh tokens in
-- $BENCH_TOKENS (one a line). With $BENCH_ROTATE=1 (the provider rotates: every token is
-- single use) a token leaves the pool when sent and the new one from the response joins it;
-- otherwise the pool's tokens are used round robin. $BENCH_AUTH is the client's Basic header.
package.path = os.getenv("BENCH_LUA_DIR") .. "/?.lua;" .. package.path
local common = require("common")

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local pool = {}
local next_i = 1
local rotate = os.getenv("BENCH_ROTATE") == "1"
local nthreads = tonumber(os.getenv("BENCH_THREADS"))
local headers = {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = os.getenv("BENCH_AUTH")}

function init(args)
  local i = 0
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if i % nthreads == id then table.insert(pool, line) end
    i = i + 1
  end
end

function request()
  local token
  if rotate then
    token = table.remove(pool, 1) or "pool-exhausted"
  else
    token = pool[next_i]
    next_i = next_i % #pool + 1
  end
  return wrk.format("POST", nil, headers, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, hdrs, body)
  if rotate then
    local t = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if t then table.insert(pool, t) end
  end
end

done = common.done
