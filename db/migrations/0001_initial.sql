-- Robot registry, partitioned readings, dead letters and the counter journal.

CREATE TABLE robots (
    id            text PRIMARY KEY CONSTRAINT robot_id_format CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name          text NOT NULL DEFAULT '',
    model         text NOT NULL DEFAULT '',
    status        text NOT NULL DEFAULT 'active'
                  CONSTRAINT robot_status CHECK (status IN ('active', 'inactive', 'maintenance')),
    battery_level real CONSTRAINT robot_battery CHECK (battery_level BETWEEN 0 AND 100),
    metadata      jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- Keyset listing filtered by status or model walks (filter, id).
CREATE INDEX robots_status_id ON robots (status, id);
CREATE INDEX robots_model_id ON robots (model, id);

-- A reading's identity is (robot_id, sensor_type, ts): the primary key is what makes a
-- redelivered message a no-op. Partitions are daily, created ahead by db/partitions.py.
CREATE TABLE sensor_readings (
    robot_id    text NOT NULL,
    sensor_type text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    seq         bigint,
    data        jsonb NOT NULL,
    PRIMARY KEY (robot_id, sensor_type, ts)
) PARTITION BY RANGE (ts);

-- The primary key serves reads by robot (and sensor type), newest first. Reads by sensor type
-- alone, and unfiltered reads (one scan per sensor type, merged), use this one. robot_id is
-- the keyset tie-break for equal timestamps. No index on ts alone: each index costs ingest
-- throughput, and this one covers the same reads.
CREATE INDEX sensor_readings_type_ts ON sensor_readings (sensor_type, ts, robot_id);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL,
    topic        text NOT NULL,
    reason       text NOT NULL,
    detail       text NOT NULL,
    payload      bytea NOT NULL,   -- capped; payload_size is the size that arrived
    payload_size integer NOT NULL
);
CREATE INDEX dead_letters_received_at ON dead_letters (received_at);

-- What each committed batch did to the Redis counters, written in the batch's transaction.
-- Applying an entry to Redis is idempotent (a marker per id), and entries are deleted once
-- applied, so a crash between commit and the Redis update leaves the counters late, not wrong.
CREATE TABLE counter_journal (
    id         bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    entry      jsonb NOT NULL
);
