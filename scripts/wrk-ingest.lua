-- wrk script: posts unique signed Didit v3 webhooks prepared by `idstream bench prepare`.
--
--   IDSTREAM_WRK_REQUESTS=requests.tsv IDSTREAM_WRK_THREADS=2 IDSTREAM_WRK_SOURCE=bench \
--     wrk -t2 -c64 -d10s --latency -s scripts/wrk-ingest.lua http://127.0.0.1:8080
--
-- Each wrk thread takes every n-th line of the file (n = IDSTREAM_WRK_THREADS), so no two
-- threads send the same webhook; requests are formatted once, at start-up, and a thread that
-- runs out starts over (its later requests are then duplicates, which idstream answers 200
-- without storing: prepare enough for the run).

local path = os.getenv("IDSTREAM_WRK_REQUESTS") or error("set IDSTREAM_WRK_REQUESTS")
local nthreads = tonumber(os.getenv("IDSTREAM_WRK_THREADS") or "1")
local source = os.getenv("IDSTREAM_WRK_SOURCE") or "bench"

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local requests = {}
local i = 0
local failed = 0

function init(args)
  local me = tonumber(id) or 0
  local n = 0
  for line in io.lines(path) do
    if n % nthreads == me then
      local ts, v2, raw, simple, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", "/webhooks/" .. source, {
        ["Content-Type"] = "application/json",
        ["X-Timestamp"] = ts,
        ["X-Signature-V2"] = v2,
        ["X-Signature"] = raw,
        ["X-Signature-Simple"] = simple,
      }, body)
    end
    n = n + 1
  end
  if #requests == 0 then error("no requests for thread " .. me .. " in " .. path) end
end

function request()
  i = i + 1
  if i > #requests then i = 1 end
  return requests[i]
end

function response(status, headers, body)
  if status ~= 200 then failed = failed + 1 end
end
