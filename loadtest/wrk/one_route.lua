-- One route alone (loadtest/route_cost.py): ROUTE_METHOD and ROUTE_PATH from the environment,
-- "{r}" in the path replaced by one of the robots at random; a PUT sends a robot's status.
local c = dofile(os.getenv("WRK_LUA_DIR") .. "/common.lua")
local method = os.getenv("ROUTE_METHOD")
local path = os.getenv("ROUTE_PATH")

setup = c.setup_thread
init = c.init
done = c.done

request = function()
  local p = path:gsub("{r}", c.robot())
  if method == "PUT" then
    return wrk.format("PUT", p, c.headers,
      string.format('{"status":"active","battery_level":%.1f}', 20 + 80 * math.random()))
  end
  return c.get(p)
end
