-- A signed upload's completion, recorded when the client asks for it and
-- before the object is assembled; PostgreSQL flavour. Keep it in step with
-- ../sqlite/0007_completions.sql.
--
-- A process that dies between assembling a multipart object (or checking a
-- single PUT's bytes) and marking the upload UPLOADED leaves the request here:
-- the uploads sweeper finishes it with the parts the client reported, so a
-- client that was never answered does not need to come back. A pending upload
-- with a completion is never expired; finding its bytes incomplete clears it.
ALTER TABLE uploads
    ADD COLUMN completion_requested_at TIMESTAMPTZ,
    -- JSON: [[part number, ETag], ...] as the client reported them; [] for a single PUT.
    ADD COLUMN completion_parts TEXT,
    ADD CONSTRAINT uploads_completion_check
        CHECK ((completion_requested_at IS NULL) = (completion_parts IS NULL));

CREATE INDEX uploads_completion_idx ON uploads (completion_requested_at)
    WHERE status = 'PENDING' AND completion_requested_at IS NOT NULL;
