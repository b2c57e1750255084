-- The counter journal's entry is written by our own code (ingest/journal_entry.py) and only
-- ever read back as text, for the Lua script that applies it. As jsonb, PostgreSQL parsed each
-- commit's entry (4-11 KB at HTTP ingest's group commits under the REST mixes) into its binary form and then
-- compressed it with pglz, for nothing: text skips the parse, and lz4 compresses several times
-- faster than pglz (BENCHMARKS.md, "Issue 15, round 7").
ALTER TABLE counter_journal ALTER COLUMN entry TYPE text;
DO $$
BEGIN
    ALTER TABLE counter_journal ALTER COLUMN entry SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    -- A server built without lz4 keeps its default (pglz): slower, still correct.
    RAISE NOTICE 'lz4 is not supported by this server; counter_journal.entry keeps pglz';
END
$$;
