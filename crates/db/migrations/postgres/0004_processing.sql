-- What the worker found in an upload's content, set when it is COMPLETED.
-- media_metadata and thumbnails are JSON documents the core reads whole;
-- what lists filter on has a column of its own.
ALTER TABLE uploads ADD COLUMN detected_type TEXT;
ALTER TABLE uploads ADD COLUMN media_metadata TEXT;
ALTER TABLE uploads ADD COLUMN thumbnails TEXT;
ALTER TABLE uploads ADD COLUMN taken_at TIMESTAMPTZ;
ALTER TABLE uploads ADD COLUMN has_gps BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE uploads ADD CONSTRAINT uploads_processed_check
    CHECK ((detected_type IS NULL) = (media_metadata IS NULL) AND (media_metadata IS NULL) = (thumbnails IS NULL));

-- The project list filtered by capture time.
CREATE INDEX uploads_taken_at_idx ON uploads (tenant_id, project_id, taken_at);
