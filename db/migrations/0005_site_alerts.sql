-- Alerts about a site (issue 16: `site_unreachable`, raised by the live service when a site
-- broker's bridge to the cloud is down) name the site, not a robot: robot ids and site ids
-- share no namespace, so the site gets a column of its own. One open alert per robot, site
-- and kind (the index the live service's ON CONFLICT names, db/alerts.py).
ALTER TABLE alerts ADD COLUMN site_id text;
DROP INDEX alerts_open;
CREATE UNIQUE INDEX alerts_open ON alerts (kind, coalesce(robot_id, ''), coalesce(site_id, ''))
    WHERE cleared_at IS NULL;
