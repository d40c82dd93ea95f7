-- wrk script: POST a JSON template, replacing every SUBMISSION_ID with a fresh UUID per request and
-- every "VARY:<number>" with that number plus a random fraction (9 decimals), so that each
-- household sent has its own answers (identical answers are flagged as likely duplicates).
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

local template, path, token
function init(args)
  math.randomseed(os.time() * 1000 + thread_id * 7919)
  local f = assert(io.open(args[1], "r"))
  template = f:read("*a")
  f:close()
  path = args[2]
  token = args[3]
end

local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end

function request()
  local body = string.gsub(template, "SUBMISSION_ID", uuid)
  body = string.gsub(body, '"VARY:([%d%.%-]+)"', function(base)
    return string.format("%.9f", tonumber(base) + math.random())
  end)
  local headers = {["Content-Type"] = "application/json"}
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("POST", path, headers, body)
end
