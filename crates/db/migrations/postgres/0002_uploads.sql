-- Uploads, their idempotency keys, and the processing queue; PostgreSQL
-- flavour. Keep it in step with ../sqlite/0002_uploads.sql: the adapters share
-- their SQL text, so table, column and constraint names must match.

-- Per-tenant overrides of the service-wide upload limits; NULL means the default.
ALTER TABLE tenants
    ADD COLUMN max_upload_bytes BIGINT CONSTRAINT tenants_max_upload_bytes_check CHECK (max_upload_bytes >= 0),
    ADD COLUMN quota_bytes      BIGINT CONSTRAINT tenants_quota_bytes_check CHECK (quota_bytes >= 0);

CREATE TABLE uploads (
    id                  UUID PRIMARY KEY,
    tenant_id           UUID NOT NULL REFERENCES tenants (id),
    project_id          UUID NOT NULL,
    uploaded_by         UUID NOT NULL,
    status              TEXT NOT NULL
                        CONSTRAINT uploads_status_check
                        CHECK (status IN ('PENDING', 'UPLOADED', 'PROCESSING', 'COMPLETED', 'FAILED', 'EXPIRED')),
    filename            TEXT NOT NULL,
    content_type        TEXT NOT NULL,
    size                BIGINT NOT NULL CONSTRAINT uploads_size_check CHECK (size >= 0),
    sha256              TEXT CONSTRAINT uploads_sha256_check CHECK (length(sha256) = 64),
    object_key          TEXT NOT NULL CONSTRAINT uploads_object_key_key UNIQUE,
    -- All three set for a multipart transfer, all three NULL for a single PUT.
    multipart_upload_id TEXT,
    part_size           BIGINT,
    part_count          INTEGER,
    expires_at          TIMESTAMPTZ NOT NULL,
    uploaded_at         TIMESTAMPTZ,
    deleted_at          TIMESTAMPTZ,
    error_code          TEXT,
    error_message       TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    CONSTRAINT uploads_transfer_check CHECK (
        (multipart_upload_id IS NULL AND part_size IS NULL AND part_count IS NULL)
        OR (multipart_upload_id IS NOT NULL AND part_size > 0 AND part_count > 0)
    ),
    CONSTRAINT uploads_failure_check CHECK ((error_code IS NULL) = (error_message IS NULL)),
    -- Target of the composite foreign keys below; as it leads with tenant_id,
    -- it also serves every by-id lookup, which always names the tenant.
    CONSTRAINT uploads_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT uploads_project_fkey FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id),
    CONSTRAINT uploads_uploaded_by_fkey FOREIGN KEY (tenant_id, uploaded_by) REFERENCES users (tenant_id, id)
);

-- The newest-first project list (`id < $before`, scanned backwards).
CREATE INDEX uploads_project_idx ON uploads (tenant_id, project_id, id);
-- The same list narrowed to a creation-time range.
CREATE INDEX uploads_project_created_idx ON uploads (tenant_id, project_id, created_at);
-- Quota checks sum a tenant's sizes by status from the index alone.
CREATE INDEX uploads_usage_idx ON uploads (tenant_id, status, size);
-- De-duplication: the newest copy of a file an uploader already sent.
CREATE INDEX uploads_duplicate_idx ON uploads (tenant_id, project_id, uploaded_by, sha256, id)
    WHERE sha256 IS NOT NULL;
-- The sweepers: pending uploads by URL expiry, the trash by deletion time.
-- Partial, so each holds only the rows its sweeper is looking for.
CREATE INDEX uploads_pending_expiry_idx ON uploads (expires_at) WHERE status = 'PENDING';
CREATE INDEX uploads_trash_idx ON uploads (deleted_at, id) WHERE deleted_at IS NOT NULL;

CREATE TABLE upload_idempotency_keys (
    tenant_id    UUID NOT NULL,
    user_id      UUID NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL CONSTRAINT upload_idempotency_keys_hash_check CHECK (octet_length(request_hash) = 32),
    upload_id    UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT upload_idempotency_keys_pkey PRIMARY KEY (tenant_id, user_id, key),
    CONSTRAINT upload_idempotency_keys_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id),
    -- Deferred: creating an upload claims its key first, so that of two
    -- concurrent requests with one key only one goes on to write an upload.
    -- The cascade itself is never deferred: purging an upload drops its keys.
    CONSTRAINT upload_idempotency_keys_upload_fkey FOREIGN KEY (tenant_id, upload_id)
        REFERENCES uploads (tenant_id, id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED
);

-- For the cascade when an upload is purged.
CREATE INDEX upload_idempotency_keys_upload_idx ON upload_idempotency_keys (tenant_id, upload_id);

-- The processing queue. Rows are inserted in the transaction of the state
-- change that causes them (transactional outbox); workers claim due rows with
-- a lease and retry them up to `max_attempts` before they are `dead`.
CREATE TABLE jobs (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id),
    -- The upload a job works on, if any: a purged upload takes its jobs with
    -- it, as there is nothing left for them to do.
    upload_id     UUID,
    kind          TEXT NOT NULL,
    payload       JSONB NOT NULL,
    state         TEXT NOT NULL DEFAULT 'queued'
                  CONSTRAINT jobs_state_check CHECK (state IN ('queued', 'running', 'done', 'dead')),
    attempts      INTEGER NOT NULL DEFAULT 0 CONSTRAINT jobs_attempts_check CHECK (attempts >= 0),
    max_attempts  INTEGER NOT NULL CONSTRAINT jobs_max_attempts_check CHECK (max_attempts > 0),
    run_at        TIMESTAMPTZ NOT NULL,
    lease_until   TIMESTAMPTZ,
    last_error    TEXT,
    -- W3C traceparent of the request that enqueued the job.
    trace_context TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT jobs_upload_fkey FOREIGN KEY (tenant_id, upload_id) REFERENCES uploads (tenant_id, id) ON DELETE CASCADE
);

-- Dequeue: the oldest due job in a state.
CREATE INDEX jobs_dequeue_idx ON jobs (state, run_at);
-- Per-tenant queue depth, for fairness and metrics.
CREATE INDEX jobs_tenant_state_idx ON jobs (tenant_id, state);
-- For the cascade when an upload is purged.
CREATE INDEX jobs_upload_idx ON jobs (tenant_id, upload_id);
