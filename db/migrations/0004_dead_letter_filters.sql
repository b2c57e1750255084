-- GET /api/dead-letters lists newest first, keyset on (received_at, id), filtered by robot
-- (the second segment of the topic, robots/{id}/...), reason and time. Each filter has an
-- index that ends in the keyset order, so a page is one index range scan, never a sort of
-- every matching row. (received_at, id) also serves retention's range delete, so it replaces
-- the index on received_at alone.
CREATE INDEX dead_letters_received_at_id ON dead_letters (received_at, id);
DROP INDEX dead_letters_received_at;
CREATE INDEX dead_letters_robot ON dead_letters (split_part(topic, '/', 2), received_at, id);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at, id);
