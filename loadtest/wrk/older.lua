-- The older clients' mix (loadtest/locustfile_older.py, their weights, zero wait): integer
-- robot ids, naive timestamps, older field names, page/page_size, /api/sensors/filtered.
local c = dofile(os.getenv("WRK_LUA_DIR") .. "/common.lua")

local IMU = '{"acceleration":{"x":0.1,"y":0.2,"z":9.8},"gyroscope":{"x":0.01,"y":0.02,"z":0.03}}'
local GPS = '{"latitude":52.52,"longitude":13.405,"altitude":34.0}'
local LIDAR = '{"distance":4.2,"angle":12.5}'
local IMU_FIELDS = { "acceleration.x", "acceleration.y", "acceleration.z", "gyroscope.z" }
local OTHER = { { "GPS", "latitude" }, { "GPS", "longitude" }, { "LiDAR", "distance" } }

local function ingest()
  local gps = GPS
  if math.random() < 0.05 then gps = "null" end
  return c.post("/api/sensors", '{"robot_id":' .. c.robot() .. ',"timestamp":"' ..
    c.iso(c.next_us(), "") .. '","sensors":[{"sensor_type":"IMU","data":' .. IMU ..
    '},{"sensor_type":"GPS","data":' .. gps .. '},{"sensor_type":"LiDAR","data":' .. LIDAR ..
    '}]}')
end

local function filtered_imu()
  return c.get("/api/sensors/filtered?robot_id=" .. c.robot() .. "&sensor_type=IMU&field=" ..
    IMU_FIELDS[math.random(1, #IMU_FIELDS)] .. "&window_size=5")
end

local function filtered_other()
  local o = OTHER[math.random(1, #OTHER)]
  return c.get("/api/sensors/filtered?robot_id=" .. c.robot() .. "&sensor_type=" .. o[1] ..
    "&field=" .. o[2] .. "&window_size=5")
end

local function by_robot()
  local now = os.time() * 1000000
  return c.get("/api/sensors?robot_id=" .. c.robot() .. "&sensor_type=IMU&start_time=" ..
    c.iso(now - 300000000, "") .. "&end_time=" .. c.iso(now, "") .. "&page=1&page_size=100")
end

local function update()
  return wrk.format("PUT", "/api/robots/" .. c.robot(), c.headers,
    string.format('{"status":"active","battery_level":%.1f}', 20 + 80 * math.random()))
end

local pick = c.weighted({
  { 100, ingest },
  { 3, function() return c.get("/api/robots") end },
  { 3, function() return c.get("/api/robots/" .. c.robot()) end },
  { 6, filtered_imu },
  { 6, filtered_other },
  { 1, by_robot },
  { 1, function() return c.get("/api/sensors?sensor_type=GPS&page=1&page_size=100") end },
  { 1, function() return c.get("/api/stats") end },
  { 1, update },
})

setup = c.setup_thread
init = c.init
request = pick
done = c.done
