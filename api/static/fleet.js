// The fleet page: the live stream (/api/live, Server-Sent Events) drives a table of robots,
// a robot's detail (charts of its decimated sensor values, its GPS track) and the alerts.
//
// Smooth with 1,000 robots: events only record what changed; one requestAnimationFrame
// callback writes the DOM. The table is virtual: it holds the rows on screen (and a few
// more) whatever the fleet's size, recycled as it scrolls, each cell written only when its
// text changed, so a frame costs the same for 20 robots or 1,000 and the browser never lays
// out a thousand rows. Text from the wire is always set with textContent, never parsed as
// markup.

const KEY_STORE = "robosense.readKey";
// History kept for the robot on show (points per field); the others keep their newest only.
const HISTORY_POINTS = 600;
const SEED_READINGS = 1000;
const BACKOFF_MAX_MS = 30_000;
const CLEARED_SHOWN = 20;

const $ = (id) => document.getElementById(id);

// ---- The key: from #key=... (scripts/run prints such a link) or asked once -------------------

function fragmentParams() {
  return new URLSearchParams(location.hash.slice(1));
}

function takeKeyFromFragment() {
  const params = fragmentParams();
  const key = params.get("key");
  if (!key) return;
  localStorage.setItem(KEY_STORE, key);
  // The key leaves the address bar (and the history) at once.
  params.delete("key");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
}

function askForKey(message) {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    const error = $("key-error");
    error.hidden = !message;
    error.textContent = message || "";
    $("key-input").value = "";
    $("key-form").onsubmit = () => {
      const key = $("key-input").value.trim();
      if (!key) return false;
      localStorage.setItem(KEY_STORE, key);
      resolve(key);
      return true;
    };
    if (!dialog.open) dialog.showModal();
  });
}

class KeyRefused extends Error {}

async function apiGet(path, key) {
  const response = await fetch(path, { headers: { "X-API-Key": key } });
  if (response.status === 401 || response.status === 403) throw new KeyRefused(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// ---- State -------------------------------------------------------------------------------

const robots = new Map(); // id -> {id, summary}
let sortedIds = []; // every robot's id, in table order
let idsDirty = false; // robots were added
let order = []; // the robots the filter lets through, in table order
let orderDirty = true;
let tableDirty = true;
const activeAlerts = new Map(); // alert id -> Alert
let clearedAlerts = []; // newest first
let alertsDirty = true;
let fleetSummary = null;
let fleetDirty = true;
let missed = 0;
let selected = null; // {id, history: Map("sensor.field" -> [[ts, value]...]), gps: [[ts, lat, lon]]}
let detailDirty = false;
let frameAsked = false;

function schedule() {
  if (!frameAsked) {
    frameAsked = true;
    requestAnimationFrame(render);
  }
}

// ---- Events from the stream ----------------------------------------------------------------

function onSummary(summary) {
  let robot = robots.get(summary.robot_id);
  if (robot === undefined) {
    robot = { id: summary.robot_id, summary };
    robots.set(summary.robot_id, robot);
    idsDirty = true;
    orderDirty = true;
  } else if (filterState && robot.summary.state !== summary.state) {
    orderDirty = true; // it may enter or leave the filtered list
  }
  robot.summary = summary;
  tableDirty = true;
  if (selected && selected.id === summary.robot_id) {
    recordHistory(selected, summary.sensors);
    detailDirty = true;
  }
  fleetDirty = true;
  schedule();
}

function onFleet(summary) {
  fleetSummary = summary;
  fleetDirty = true;
  schedule();
}

function onAlert(alert) {
  if (alert.cleared_at == null) {
    activeAlerts.set(alert.id, alert);
  } else {
    activeAlerts.delete(alert.id);
    clearedAlerts = [alert, ...clearedAlerts.filter((a) => a.id !== alert.id)].slice(
      0,
      CLEARED_SHOWN,
    );
  }
  alertsDirty = true;
  fleetDirty = true;
  schedule();
}

function onDropped(info) {
  missed += info.missed;
  fleetDirty = true;
  schedule();
}

// ---- The table (virtual: only the rows on screen exist) ---------------------------------------

const COLUMNS = ["robot", "state", "battery", "seen", "rate", "gaps", "alerts"];
// Rows drawn beyond each edge of the visible part, so a scroll shows no gap.
const OVERSCAN = 10;
const pool = []; // row slots: {row, cells, link, badge, fill, level, text, robot}
let rowHeight = 0; // measured from the first row shown
let topSpacer = null;
let bottomSpacer = null;

function spacer() {
  const row = document.createElement("tr");
  row.className = "spacer";
  const cell = document.createElement("td");
  cell.colSpan = COLUMNS.length;
  row.appendChild(cell);
  return row;
}

function newSlot() {
  const row = document.createElement("tr");
  const cells = {};
  for (const name of COLUMNS) {
    const cell = document.createElement("td");
    cell.className = name;
    row.appendChild(cell);
    cells[name] = cell;
  }
  const link = document.createElement("a");
  cells.robot.appendChild(link);
  const badge = document.createElement("span");
  badge.className = "badge";
  cells.state.appendChild(badge);
  const bar = document.createElement("span");
  bar.className = "bar";
  const fill = document.createElement("i");
  bar.appendChild(fill);
  const level = document.createElement("span");
  cells.battery.append(bar, level);
  return { row, cells, link, badge, fill, level, text: {}, robot: null };
}

// Writes a text only when it changed: most cells stay the same from one summary to the next.
function setText(slot, name, element, text) {
  if (slot.text[name] !== text) {
    slot.text[name] = text;
    element.textContent = text;
  }
}

function sumValues(counts) {
  let total = 0;
  for (const value of Object.values(counts || {})) total += value;
  return total;
}

function ago(ms, now) {
  if (ms == null) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function fmtDelay(ms) {
  const s = Math.round(ms / 1000);
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
}

function fmtBattery(percent) {
  return percent == null ? "–" : `${percent.toFixed(0)} %`;
}

function fillRow(slot, robot, now) {
  const s = robot.summary;
  const row = slot.row;
  if (slot.robot !== robot) {
    // The slot shows another robot now: every cell is written again.
    slot.robot = robot;
    slot.text = {};
    row.dataset.robotId = robot.id;
    slot.link.href = `#robot=${encodeURIComponent(robot.id)}`;
    slot.link.textContent = robot.id;
  }
  row.classList.toggle("selected", selected !== null && selected.id === robot.id);
  if (slot.text.stateAttr !== s.state) {
    slot.text.stateAttr = s.state;
    row.dataset.state = s.state;
    slot.badge.dataset.state = s.state;
  }
  if (slot.text.at !== s.at) {
    slot.text.at = s.at;
    row.dataset.at = String(s.at);
  }
  setText(slot, "state", slot.badge, s.state.replaceAll("_", " "));
  const battery = fmtBattery(s.battery_percent);
  if (slot.text.battery !== battery) {
    slot.fill.style.width = `${Math.max(0, Math.min(100, s.battery_percent ?? 0))}%`;
    slot.fill.className = s.battery_percent != null && s.battery_percent < 20 ? "low" : "";
  }
  setText(slot, "battery", slot.level, battery);
  // Data arriving late (a site's backlog draining): how late its newest reading was.
  const late = s.delay_ms != null && s.delay_ms >= 10000 ? `, data ${fmtDelay(s.delay_ms)} late` : "";
  setText(slot, "seen", slot.cells.seen, ago(s.last_seen, now) + late);
  setText(slot, "rate", slot.cells.rate, `${s.rate_hz.toFixed(1)}/s`);
  const gaps = sumValues(s.gaps_total);
  if (slot.text.gaps !== String(gaps)) slot.cells.gaps.classList.toggle("some", gaps > 0);
  setText(slot, "gaps", slot.cells.gaps, String(gaps));
  setText(slot, "alerts", slot.cells.alerts, s.active_alerts.join(", "));
}

let filterText = "";
let filterState = "";

function matches(robot) {
  const s = robot.summary;
  if (filterText && !robot.id.toLowerCase().includes(filterText)) return false;
  if (!filterState) return true;
  return filterState === "alerting" ? s.active_alerts.length > 0 : s.state === filterState;
}

function refilter() {
  filterText = $("filter-text").value.trim().toLowerCase();
  filterState = $("filter-state").value;
  orderDirty = true;
  tableDirty = true;
  fleetDirty = true;
  schedule();
}

function renderTable(now) {
  if (idsDirty) {
    sortedIds = [...robots.keys()].sort();
    idsDirty = false;
  }
  if (orderDirty) {
    order = [];
    for (const id of sortedIds) {
      const robot = robots.get(id);
      if (matches(robot)) order.push(robot);
    }
    orderDirty = false;
    fleetDirty = true;
  }
  const wrap = $("table-wrap");
  const tbody = $("robots").tBodies[0];
  if (topSpacer === null) {
    topSpacer = spacer();
    bottomSpacer = spacer();
    tbody.append(topSpacer, bottomSpacer);
  }
  const height = rowHeight || 30;
  const top = Math.max(0, wrap.scrollTop - tbody.offsetTop);
  const first = Math.min(order.length, Math.max(0, Math.floor(top / height) - OVERSCAN));
  const last = Math.min(order.length, first + Math.ceil(wrap.clientHeight / height) + 2 * OVERSCAN);
  const shown = last - first;
  while (pool.length < shown) pool.push(newSlot());
  // Slots in use sit between the spacers, in order; the others leave the table.
  for (let k = 0; k < pool.length; k += 1) {
    const slot = pool[k];
    if (k < shown) {
      if (slot.row.parentNode !== tbody) tbody.insertBefore(slot.row, bottomSpacer);
      fillRow(slot, order[first + k], now);
    } else if (slot.row.parentNode === tbody) {
      slot.row.remove();
      slot.robot = null;
    }
  }
  topSpacer.style.height = `${first * height}px`;
  bottomSpacer.style.height = `${(order.length - last) * height}px`;
  if (!rowHeight && shown > 0) {
    rowHeight = pool[0].row.getBoundingClientRect().height;
    if (rowHeight > 0 && rowHeight !== height) tableDirty = true; // draw again, measured
  }
  $("no-robots").hidden = robots.size > 0;
}

function renderFleet() {
  const counts = { online: 0, stale: 0, offline: 0, unknown: 0, site_unreachable: 0 };
  for (const robot of robots.values()) {
    counts[robot.summary.state] = (counts[robot.summary.state] || 0) + 1;
  }
  for (const [state, n] of Object.entries(counts)) $(`count-${state}`).textContent = String(n);
  const rate = fleetSummary ? fleetSummary.rate_hz : sumRates();
  $("fleet-rate").textContent = rate.toFixed(0);
  $("count-alerts").textContent = String(activeAlerts.size);
  $("shown-count").textContent = `${order.length} of ${robots.size} robots`;
  const dropped = $("dropped");
  dropped.hidden = missed === 0;
  dropped.textContent = `${missed} updates skipped while this page was behind`;
}

function sumRates() {
  let total = 0;
  for (const robot of robots.values()) total += robot.summary.rate_hz;
  return total;
}

// ---- The alerts ----------------------------------------------------------------------------

function alertItem(alert, cleared) {
  const item = document.createElement("li");
  item.dataset.alertId = String(alert.id);
  item.dataset.kind = alert.kind;
  item.dataset.severity = alert.severity;
  if (alert.robot_id) item.dataset.robotId = alert.robot_id;
  const time = document.createElement("span");
  time.className = "alert-time";
  const at = cleared ? alert.cleared_at : alert.raised_at;
  time.textContent = `${cleared ? "cleared" : "since"} ${new Date(at).toLocaleTimeString()}`;
  const kind = document.createElement("span");
  kind.className = "alert-kind";
  kind.textContent = alert.kind.replaceAll("_", " ");
  item.append(time, kind);
  if (alert.robot_id) {
    const robot = document.createElement("a");
    robot.className = "alert-robot";
    robot.href = `#robot=${encodeURIComponent(alert.robot_id)}`;
    robot.textContent = alert.robot_id;
    item.append(robot);
  } else if (alert.site_id) {
    const site = document.createElement("span");
    site.className = "alert-robot";
    site.textContent = `site ${alert.site_id}`;
    item.append(site);
  }
  const message = document.createElement("span");
  message.className = "alert-message";
  message.textContent = alert.message;
  item.append(message);
  return item;
}

function renderAlerts() {
  const active = [...activeAlerts.values()].sort((a, b) => b.raised_at - a.raised_at);
  $("alerts").replaceChildren(...active.map((a) => alertItem(a, false)));
  $("no-alerts").hidden = active.length > 0;
  $("alerts-cleared").replaceChildren(...clearedAlerts.map((a) => alertItem(a, true)));
}

async function loadActiveAlerts(key) {
  const loaded = new Map();
  let cursor = null;
  do {
    const query = new URLSearchParams({ active: "true", limit: "1000" });
    if (cursor) query.set("cursor", cursor);
    const page = await apiGet(`/api/alerts?${query}`, key);
    for (const alert of page.items) loaded.set(alert.id, alert);
    cursor = page.next_cursor;
  } while (cursor);
  activeAlerts.clear();
  for (const [id, alert] of loaded) activeAlerts.set(id, alert);
  alertsDirty = true;
  fleetDirty = true;
  schedule();
}

// ---- A robot's detail ------------------------------------------------------------------------

// Numeric leaves of a reading's data: {"accel": {"x": 1}} -> [["accel.x", 1]].
function numericFields(data, prefix = "", out = []) {
  for (const [name, value] of Object.entries(data)) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (typeof value === "number") out.push([path, value]);
    else if (value && typeof value === "object" && !Array.isArray(value)) {
      numericFields(value, path, out);
    }
  }
  return out;
}

function pushPoint(series, ts, value) {
  const last = series[series.length - 1];
  if (last && last[0] >= ts) return; // the same reading again, or an older one
  series.push([ts, value]);
  if (series.length > HISTORY_POINTS) series.splice(0, series.length - HISTORY_POINTS);
}

function recordHistory(view, sensors) {
  for (const [sensor, latest] of Object.entries(sensors)) {
    for (const [field, value] of numericFields(latest.data)) {
      const key = `${sensor}.${field}`;
      if (!view.history.has(key)) view.history.set(key, []);
      pushPoint(view.history.get(key), latest.ts, value);
    }
    if (sensor === "gps" && typeof latest.data.lat === "number") {
      const last = view.gps[view.gps.length - 1];
      if (!last || last[0] < latest.ts) {
        view.gps.push([latest.ts, latest.data.lat, latest.data.lon]);
        if (view.gps.length > HISTORY_POINTS) view.gps.shift();
      }
    }
  }
}

// The charts start with the robot's recent stored readings, thinned to one a second (the
// stream's rate), so a robot opened now does not show empty charts.
async function seedHistory(view, key) {
  const robot = robots.get(view.id);
  const sensors = robot && robot.summary ? Object.keys(robot.summary.sensors) : [];
  await Promise.all(
    sensors.map(async (sensor) => {
      const query = new URLSearchParams({
        robot_id: view.id,
        sensor_type: sensor,
        limit: String(SEED_READINGS),
      });
      const page = await apiGet(`/api/sensors?${query}`, key);
      const readings = page.items
        .map((r) => ({ ts: Date.parse(r.ts), data: r.data }))
        .sort((a, b) => a.ts - b.ts);
      let lastSecond = null;
      const thinned = [];
      for (const reading of readings) {
        const second = Math.floor(reading.ts / 1000);
        if (second !== lastSecond) thinned.push(reading);
        lastSecond = second;
      }
      if (selected !== view) return;
      const seeded = { id: view.id, history: new Map(), gps: [] };
      for (const reading of thinned) recordHistory(seeded, { [sensor]: reading });
      // Stored readings come first, then whatever the stream brought meanwhile.
      for (const [field, series] of seeded.history) {
        const live = view.history.get(field) || [];
        const first = live.length ? live[0][0] : Infinity;
        view.history.set(field, [...series.filter((p) => p[0] < first), ...live]);
      }
      if (sensor === "gps") {
        const first = view.gps.length ? view.gps[0][0] : Infinity;
        view.gps = [...seeded.gps.filter((p) => p[0] < first), ...view.gps];
      }
    }),
  );
  detailDirty = true;
  schedule();
}

function select(id, key) {
  if (selected && selected.id === id) return;
  selected = id ? { id, history: new Map(), gps: [] } : null;
  $("detail").hidden = !selected;
  $("charts").replaceChildren();
  charts.clear();
  tableDirty = true;
  schedule();
  if (!selected) return;
  const robot = robots.get(id);
  if (robot && robot.summary) recordHistory(selected, robot.summary.sensors);
  detailDirty = true;
  schedule();
  seedHistory(selected, key).catch((error) => console.warn("no stored readings", error));
}

const charts = new Map(); // "sensor.field" -> canvas

function chartCanvas(key) {
  let canvas = charts.get(key);
  if (canvas === undefined) {
    const sensor = key.split(".")[0];
    const container = $("charts");
    if (!container.querySelector(`[data-sensor="${CSS.escape(sensor)}"]`)) {
      const title = document.createElement("div");
      title.className = "chart-sensor";
      title.dataset.sensor = sensor;
      title.textContent = sensor;
      container.appendChild(title);
    }
    canvas = document.createElement("canvas");
    canvas.className = "chart";
    canvas.dataset.field = key;
    // Charts of one sensor stay together: after the last of its kind, else at the end.
    const same = container.querySelectorAll(`canvas[data-field^="${CSS.escape(sensor)}."]`);
    const anchor = same.length ? same[same.length - 1].nextSibling : null;
    container.insertBefore(canvas, anchor);
    charts.set(key, canvas);
  }
  return canvas;
}

function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  return { ctx, w: canvas.clientWidth, h: canvas.clientHeight };
}

function fmtValue(value) {
  return Math.abs(value) >= 1e6 ? value.toExponential(3) : String(Number(value.toPrecision(6)));
}

function drawChart(canvas, field, series) {
  const { ctx, w, h } = prepare(canvas);
  const pad = { left: 4, right: 4, top: 14, bottom: 4 };
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#67707c";
  ctx.fillText(field.slice(field.indexOf(".") + 1), pad.left, 11);
  if (series.length === 0) return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, v] of series) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const last = series[series.length - 1][1];
  ctx.textAlign = "right";
  ctx.fillStyle = "#1d232b";
  ctx.fillText(fmtValue(last), w - pad.right, 11);
  ctx.textAlign = "left";
  if (hi === lo) {
    hi += 1;
    lo -= 1;
  }
  const t0 = series[0][0];
  const span = Math.max(1, series[series.length - 1][0] - t0);
  const x = (t) => pad.left + ((t - t0) / span) * (w - pad.left - pad.right);
  const y = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (h - pad.top - pad.bottom);
  ctx.strokeStyle = "#2457c5";
  ctx.lineWidth = 1.25;
  ctx.beginPath();
  series.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
}

const EARTH_M_PER_DEG = 111_320;

function drawTrack(canvas, points) {
  const { ctx, w, h } = prepare(canvas);
  const caption = $("gps-caption");
  if (points.length === 0) {
    ctx.fillStyle = "#67707c";
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText("no GPS position yet", 10, 20);
    caption.textContent = "";
    return;
  }
  // An equirectangular plot, east to the right and north up, with metres equal both ways.
  let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
  for (const [, lat, lon] of points) {
    minLat = Math.min(minLat, lat);
    maxLat = Math.max(maxLat, lat);
    minLon = Math.min(minLon, lon);
    maxLon = Math.max(maxLon, lon);
  }
  const kx = Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180) * EARTH_M_PER_DEG;
  const ky = EARTH_M_PER_DEG;
  const spanX = Math.max((maxLon - minLon) * kx, 10);
  const spanY = Math.max((maxLat - minLat) * ky, 10);
  const pad = 14;
  const scale = Math.min((w - 2 * pad) / spanX, (h - 2 * pad) / spanY);
  const cx = (minLon + maxLon) / 2;
  const cy = (minLat + maxLat) / 2;
  const px = (lon) => w / 2 + (lon - cx) * kx * scale;
  const py = (lat) => h / 2 - (lat - cy) * ky * scale;
  ctx.strokeStyle = "#9aa4b2";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach(([, lat, lon], i) => (i ? ctx.lineTo(px(lon), py(lat)) : ctx.moveTo(px(lon), py(lat))));
  ctx.stroke();
  const [, lat0, lon0] = points[0];
  ctx.strokeStyle = "#67707c";
  ctx.beginPath();
  ctx.arc(px(lon0), py(lat0), 4, 0, 2 * Math.PI);
  ctx.stroke();
  const [, lat, lon] = points[points.length - 1];
  ctx.fillStyle = "#2457c5";
  ctx.beginPath();
  ctx.arc(px(lon), py(lat), 5, 0, 2 * Math.PI);
  ctx.fill();
  // A scale bar of a round number of metres.
  const target = (w - 2 * pad) / 4 / scale;
  const metres = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000].find((m) => m >= target) || 10000;
  ctx.strokeStyle = "#1d232b";
  ctx.beginPath();
  ctx.moveTo(pad, h - pad);
  ctx.lineTo(pad + metres * scale, h - pad);
  ctx.stroke();
  ctx.fillStyle = "#1d232b";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, pad, h - pad - 4);
  caption.textContent = `${points.length} positions; now ${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}

function renderDetail(now) {
  const robot = robots.get(selected.id);
  $("detail-title").textContent = selected.id;
  const s = robot && robot.summary;
  const fields = s
    ? [
        ["State", s.state.replaceAll("_", " ")],
        ["Site", s.site || "none (publishes to the cloud directly)"],
        ["Delay of its newest reading", s.delay_ms == null ? "–" : fmtDelay(s.delay_ms)],
        ["Battery", fmtBattery(s.battery_percent)],
        ["Last seen", ago(s.last_seen, now)],
        ["Reading rate", `${s.rate_hz.toFixed(1)}/s`],
        [
          "Sequence gaps",
          Object.entries(s.gaps_total)
            .map(([sensor, n]) => `${sensor} ${n}`)
            .join(", ") || "none",
        ],
        ["Active alerts", s.active_alerts.join(", ") || "none"],
      ]
    : [["State", "no summary yet"]];
  const list = $("detail-fields");
  list.replaceChildren(
    ...fields.flatMap(([name, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = name;
      return [dt, dd];
    }),
  );
  for (const [field, series] of [...selected.history.entries()].sort()) {
    drawChart(chartCanvas(field), field, series);
  }
  drawTrack($("gps-track"), selected.gps);
}

// ---- The frame -----------------------------------------------------------------------------

function render() {
  frameAsked = false;
  const now = Date.now();
  if (tableDirty) {
    tableDirty = false;
    renderTable(now);
    if (tableDirty) schedule();
  }
  if (fleetDirty) {
    renderFleet();
    fleetDirty = false;
  }
  if (alertsDirty) {
    renderAlerts();
    alertsDirty = false;
  }
  if (selected && detailDirty) {
    renderDetail(now);
    detailDirty = false;
  }
}

// ---- The stream: a token from the key, EventSource, a new token when it is refused ----------

function setStatus(status, text) {
  const element = $("conn-status");
  element.dataset.status = status;
  element.textContent = text;
}

class Live {
  constructor(key) {
    this.key = key;
    this.source = null;
    this.failures = 0;
    this.timer = null;
  }

  async connect() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    setStatus("connecting", "connecting…");
    let token;
    try {
      const response = await fetch("/api/live/token", {
        method: "POST",
        headers: { "X-API-Key": this.key },
      });
      if (response.status === 401 || response.status === 403) throw new KeyRefused("token");
      if (!response.ok) throw new Error(`token: HTTP ${response.status}`);
      token = (await response.json()).token;
    } catch (error) {
      if (error instanceof KeyRefused) return restart("That key was refused (it needs the read scope).");
      return this.retry(error);
    }
    const source = new EventSource(`/api/live?token=${encodeURIComponent(token)}`);
    this.source = source;
    source.addEventListener("summary", (e) => onSummary(JSON.parse(e.data)));
    source.addEventListener("fleet", (e) => onFleet(JSON.parse(e.data)));
    source.addEventListener("alert", (e) => onAlert(JSON.parse(e.data)));
    source.addEventListener("dropped", (e) => onDropped(JSON.parse(e.data)));
    source.onopen = () => {
      this.failures = 0;
      setStatus("live", "live");
      // Alerts raised or cleared while the page was away are not replayed by the stream.
      loadActiveAlerts(this.key).catch((error) => {
        if (error instanceof KeyRefused) restart("That key was refused.");
        else console.warn("alerts not loaded", error);
      });
    };
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (an expired token, most likely): the browser gives up, so ask for a new one.
        this.retry(new Error("stream closed"));
      } else {
        // The browser reconnects by itself with the same token.
        setStatus("reconnecting", "reconnecting…");
      }
    };
  }

  retry(error) {
    console.warn("live stream:", error);
    if (this.source) this.source.close();
    this.source = null;
    const delay = Math.min(BACKOFF_MAX_MS, 500 * 2 ** this.failures);
    this.failures += 1;
    setStatus("reconnecting", `reconnecting in ${Math.round(delay / 1000)} s…`);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  close() {
    clearTimeout(this.timer);
    if (this.source) this.source.close();
    this.source = null;
  }
}

let live = null;

async function restart(message) {
  if (live) live.close();
  live = null;
  localStorage.removeItem(KEY_STORE);
  const key = await askForKey(message);
  start(key);
}

function start(key) {
  live = new Live(key);
  live.connect();
  route();
}

function route() {
  const id = fragmentParams().get("robot");
  if (live) select(id || null, live.key);
}

function main() {
  takeKeyFromFragment();
  $("filter-text").addEventListener("input", refilter);
  $("filter-state").addEventListener("change", refilter);
  $("forget-key").addEventListener("click", () => restart(""));
  $("detail-close").addEventListener("click", (event) => {
    event.preventDefault();
    history.replaceState(null, "", location.pathname + location.search);
    route();
  });
  window.addEventListener("hashchange", () => {
    takeKeyFromFragment();
    route();
  });
  window.addEventListener("resize", () => {
    tableDirty = true;
    detailDirty = true;
    schedule();
  });
  $("table-wrap").addEventListener(
    "scroll",
    () => {
      tableDirty = true;
      schedule();
    },
    { passive: true },
  );
  $("robots").tBodies[0].addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-robot-id]");
    if (row && event.target.tagName !== "A") {
      location.hash = `robot=${encodeURIComponent(row.dataset.robotId)}`;
    }
  });
  // "Last seen 3 s ago" moves on without events.
  setInterval(() => {
    tableDirty = true;
    detailDirty = true;
    schedule();
  }, 1000);
  const key = localStorage.getItem(KEY_STORE);
  if (key) start(key);
  else restart("");
}

main();
