-- A signed upload's completion, recorded when the client asks for it and
-- before the object is assembled; SQLite flavour. Keep it in step with
-- ../postgres/0007_completions.sql (see there for why).
--
-- SQLite cannot add a table constraint to an existing table; the adapter
-- always writes the two columns together.
ALTER TABLE uploads ADD COLUMN completion_requested_at TEXT;
-- JSON: [[part number, ETag], ...] as the client reported them; [] for a single PUT.
ALTER TABLE uploads ADD COLUMN completion_parts TEXT;

CREATE INDEX uploads_completion_idx ON uploads (completion_requested_at)
    WHERE status = 'PENDING' AND completion_requested_at IS NOT NULL;
