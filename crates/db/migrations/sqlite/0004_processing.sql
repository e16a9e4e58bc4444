-- What the worker found in an upload's content, set when it is COMPLETED.
-- media_metadata and thumbnails are JSON documents the core reads whole;
-- what lists filter on has a column of its own. (SQLite cannot add a table
-- CHECK constraint to an existing table; the adapter writes the three
-- document columns together.)
ALTER TABLE uploads ADD COLUMN detected_type TEXT;
ALTER TABLE uploads ADD COLUMN media_metadata TEXT;
ALTER TABLE uploads ADD COLUMN thumbnails TEXT;
ALTER TABLE uploads ADD COLUMN taken_at TEXT;
ALTER TABLE uploads ADD COLUMN has_gps INTEGER NOT NULL DEFAULT 0 CHECK (has_gps IN (0, 1));

-- The project list filtered by capture time.
CREATE INDEX uploads_taken_at_idx ON uploads (tenant_id, project_id, taken_at);
