-- tus 1.0 resumable uploads; SQLite flavour. Keep it in step with
-- ../postgres/0005_tus.sql: the adapters share their SQL text.
--
-- A tus upload IS an ordinary upload row (`uploads`, PENDING while partial);
-- this table holds only what the tus protocol adds: the acknowledged offset,
-- the length (NULL until declared, for creation-defer-length), the raw
-- Upload-Metadata, where the partial bytes are staged, and the lease that
-- serialises PATCHes across replicas. The expiry is the upload row's
-- `expires_at`, so the uploads sweeper expires tus uploads as well.
CREATE TABLE tus_uploads (
    tenant_id     BLOB NOT NULL,
    upload_id     BLOB NOT NULL,
    length        INTEGER CONSTRAINT tus_uploads_length_check CHECK (length >= 0),
    upload_offset INTEGER NOT NULL DEFAULT 0 CONSTRAINT tus_uploads_offset_check CHECK (upload_offset >= 0),
    metadata      TEXT NOT NULL,
    staging_key   TEXT NOT NULL,
    -- S3: the fixed part size and the multipart upload chosen at creation
    -- (both NULL on the local disk, which appends to one staging file).
    part_size     INTEGER CONSTRAINT tus_uploads_part_size_check CHECK (part_size > 0),
    multipart_upload_id TEXT,
    -- Concatenation: 'partial', or 'final' with the partial ids in `concat_parts`.
    concat        TEXT CONSTRAINT tus_uploads_concat_check CHECK (concat IN ('partial', 'final')),
    concat_parts  TEXT,
    -- The PATCH lease: whoever holds a token whose `lock_until` is in the
    -- future may append; every offset change names the token (fencing).
    lock_token    BLOB,
    lock_until    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT tus_uploads_pkey PRIMARY KEY (tenant_id, upload_id),
    CONSTRAINT tus_uploads_offset_length_check CHECK (length IS NULL OR upload_offset <= length),
    CONSTRAINT tus_uploads_upload_fkey FOREIGN KEY (tenant_id, upload_id)
        REFERENCES uploads (tenant_id, id) ON DELETE CASCADE
) STRICT;

-- S3 only: every part written to the multipart upload, as we recorded it
-- (never rebuilt from ListParts).
CREATE TABLE tus_parts (
    tenant_id  BLOB NOT NULL,
    upload_id  BLOB NOT NULL,
    number     INTEGER NOT NULL CONSTRAINT tus_parts_number_check CHECK (number BETWEEN 1 AND 10000),
    etag       TEXT NOT NULL,
    size       INTEGER NOT NULL CONSTRAINT tus_parts_size_check CHECK (size > 0),
    sha256     TEXT NOT NULL CONSTRAINT tus_parts_sha256_check CHECK (length(sha256) = 64),
    created_at TEXT NOT NULL,
    CONSTRAINT tus_parts_pkey PRIMARY KEY (tenant_id, upload_id, number),
    CONSTRAINT tus_parts_upload_fkey FOREIGN KEY (tenant_id, upload_id)
        REFERENCES tus_uploads (tenant_id, upload_id) ON DELETE CASCADE
) STRICT;
