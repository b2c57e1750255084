-- HTTP ingest in the contract's batch shape: 100 IMU readings per body, epoch-ms
-- timestamps. Each thread owns the robots r with (r - 1) % threads == its index and gives
-- each robot's readings increasing timestamps from BASE (an hour back, so they stay in the
-- window): no reading repeats another, in this run or an earlier one.
local c = dofile(os.getenv("WRK_LUA_DIR") .. "/common.lua")

local IMU = '{"accel":{"x":0.1,"y":0.2,"z":9.8},"gyro":{"x":0.01,"y":0.02,"z":0.03}}'
local N = 100
local mine, next_ms, turn = {}, {}, 0

local function request_()
  if #mine == 0 then
    local tid = _G.thread_id or 0
    for r = 1, c.robots do
      if (r - 1) % c.nthreads == tid then
        mine[#mine + 1] = tostring(r)
        next_ms[tostring(r)] = math.floor(c.base_us / 1000)
      end
    end
  end
  turn = turn % #mine + 1
  local robot = mine[turn]
  local first = next_ms[robot]
  next_ms[robot] = first + N
  local parts = {}
  for i = 0, N - 1 do
    parts[#parts + 1] = string.format('{"ts":%d,"seq":%d,"data":%s}', first + i, first + i, IMU)
  end
  return c.post("/api/sensors", '{"robot_id":"' .. robot .. '","sensor_type":"imu","readings":[' ..
    table.concat(parts, ",") .. ']}')
end

setup = c.setup_thread
init = c.init
request = request_
done = c.done
