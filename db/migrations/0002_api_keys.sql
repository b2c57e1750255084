-- REST API keys (api/keys.py owns the format). A key is `rsk_<id>_<secret>`: the id is public
-- and is the primary key, so verifying a key is one index lookup, never a scan of every key.
-- Only a hash of the secret is stored. Revoked keys stay (revoked_at set) so that the list
-- shows who had access and when it ended.
CREATE TABLE api_keys (
    id          text PRIMARY KEY CONSTRAINT api_key_id_format CHECK (id ~ '^[0-9a-f]{12}$'),
    name        text NOT NULL DEFAULT '',
    scopes      text[] NOT NULL CONSTRAINT api_key_scopes
                CHECK (cardinality(scopes) > 0
                       AND scopes <@ ARRAY['read', 'ingest', 'registry', 'admin']),
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
