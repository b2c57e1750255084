-- Alerts raised and cleared by the live service (live/alerts.py decides, db/alerts.py speaks
-- SQL). robot_id has no foreign key: an alert outlives the robot it was about.
CREATE TABLE alerts (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL,
    severity   text NOT NULL CONSTRAINT alert_severity CHECK (severity IN ('warning', 'critical')),
    robot_id   text,
    raised_at  timestamptz NOT NULL,
    cleared_at timestamptz,
    message    text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}'
);
-- At most one open alert per robot and kind: a restarted (or a second) live service that
-- raises what is already open finds it instead of adding a duplicate.
CREATE UNIQUE INDEX alerts_open ON alerts (kind, coalesce(robot_id, '')) WHERE cleared_at IS NULL;
-- GET /api/alerts walks id newest first, optionally filtered by robot, kind, or open/cleared.
CREATE INDEX alerts_robot_id ON alerts (robot_id, id);
CREATE INDEX alerts_kind_id ON alerts (kind, id);
CREATE INDEX alerts_active_id ON alerts (id) WHERE cleared_at IS NULL;

-- When the battery reading behind robots.battery_level was taken: the live service writes a
-- reading's level only if it is newer than this, so a PATCH holds until the next reading.
ALTER TABLE robots ADD COLUMN battery_at timestamptz;
