-- Our REST mix (loadtest/rest.py's, zero wait): 100 POST /api/sensors in the older body
-- shape (IMU + GPS + LiDAR, 5 % GPS data null), 3 robot lists, 3 robot details, sensors by
-- robot, by type, stats, a moving average and a bucket aggregate.
local c = dofile(os.getenv("WRK_LUA_DIR") .. "/common.lua")

local IMU = '{"accel":{"x":0.1,"y":0.2,"z":9.8},"gyro":{"x":0.01,"y":0.02,"z":0.03}}'
local GPS = '{"lat":52.52,"lon":13.405,"alt":34.0}'
local LIDAR = '{"distance":4.2,"angle":12.5}'

local function ingest()
  local gps = GPS
  if math.random() < 0.05 then gps = "null" end
  return c.post("/api/sensors", '{"robot_id":"' .. c.robot() .. '","timestamp":"' ..
    c.iso(c.next_us(), "+00:00") .. '","sensors":[{"sensor_type":"IMU","data":' .. IMU ..
    '},{"sensor_type":"GPS","data":' .. gps .. '},{"sensor_type":"LiDAR","data":' .. LIDAR ..
    '}]}')
end

local pick = c.weighted({
  { 100, ingest },
  { 3, function() return c.get("/api/robots") end },
  { 3, function() return c.get("/api/robots/" .. c.robot()) end },
  { 1, function() return c.get("/api/sensors?robot_id=" .. c.robot()) end },
  { 1, function() return c.get("/api/sensors?sensor_type=gps") end },
  { 1, function() return c.get("/api/stats") end },
  { 1, function() return c.get("/api/sensors/aggregate?sensor_type=imu&field=accel.x&robot_id="
      .. c.robot() .. "&window=20") end },
  { 1, function() return c.get("/api/sensors/aggregate?sensor_type=imu&field=accel.x&robot_id="
      .. c.robot() .. "&bucket=1m&fn=avg") end },
})

setup = c.setup_thread
init = c.init
request = pick
done = c.done
