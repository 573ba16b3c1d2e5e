-- wrk script: every request creates a new user (a unique email per request).
local n = 0
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    string.format('{"name": "Load %d", "email": "load%d-%d@example.com"}', n, n, math.random(1e9)))
end
