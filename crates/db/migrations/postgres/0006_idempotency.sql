-- Idempotency keys of creating requests other than upload initiation (which
-- keeps its own table, tied to the upload): the key a user sent, a digest of
-- the request, and the id of what it created, per kind of resource (`scope`).
-- A retry with the same key and request answers with the same resource.
CREATE TABLE idempotency_keys (
    tenant_id    UUID NOT NULL,
    user_id      UUID NOT NULL,
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL CONSTRAINT idempotency_keys_hash_check CHECK (octet_length(request_hash) = 32),
    resource_id  UUID NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (tenant_id, user_id, scope, key),
    CONSTRAINT idempotency_keys_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
