-- BuildPeer metadata schema, SQLite flavour. Keep it in step with
-- ../postgres/0001_init.sql: the adapters share their SQL text.
--
-- Types follow sqlx's SQLite encodings. UUIDs are 16-byte BLOBs, compared
-- byte by byte like PostgreSQL's uuid, so UUIDv7 order is creation order.
-- Timestamps are RFC 3339 TEXT ending in "+00:00", with a fraction of 3, 6 or
-- 9 digits only when it is non-zero; as "+" sorts before every digit, text
-- order is still time order, which `expires_at > $now` relies on (the
-- conformance tests pin the boundaries). STRICT makes SQLite refuse a value
-- of the wrong type instead of storing it.

CREATE TABLE tenants (
    id         BLOB NOT NULL PRIMARY KEY,
    slug       TEXT NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id            BLOB NOT NULL PRIMARY KEY,
    tenant_id     BLOB NOT NULL REFERENCES tenants (id),
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL
                  CONSTRAINT users_role_check CHECK (role IN ('admin', 'supervisor', 'empleado', 'viewer')),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT FALSE CHECK (disabled IN (FALSE, TRUE)),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email),
    -- Target of the composite foreign keys that keep other rows inside the
    -- user's tenant; also the index behind the newest-first user list.
    CONSTRAINT users_tenant_id_key UNIQUE (tenant_id, id)
) STRICT;

CREATE TABLE projects (
    id          BLOB NOT NULL PRIMARY KEY,
    tenant_id   BLOB NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    code        TEXT,
    address     TEXT,
    created_by  BLOB NOT NULL,
    archived_at TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    -- Scanned backwards, this also serves the newest-first project list, so
    -- no separate (tenant_id, id DESC) index is needed.
    CONSTRAINT projects_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT projects_created_by_fkey FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
) STRICT;

CREATE UNIQUE INDEX projects_tenant_code_key ON projects (tenant_id, code) WHERE code IS NOT NULL;

CREATE TABLE project_members (
    id         BLOB NOT NULL PRIMARY KEY,
    tenant_id  BLOB NOT NULL,
    project_id BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    -- Same rule as UNIQUE (project_id, user_id), since a project belongs to one
    -- tenant; leading with tenant_id makes an insert naming another tenant's
    -- project hit the foreign keys below instead of a silent ON CONFLICT.
    CONSTRAINT project_members_key UNIQUE (tenant_id, project_id, user_id),
    CONSTRAINT project_members_project_fkey FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id),
    CONSTRAINT project_members_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
) STRICT;

CREATE INDEX project_members_user_idx ON project_members (user_id);

CREATE TABLE refresh_tokens (
    id         BLOB NOT NULL PRIMARY KEY,
    tenant_id  BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    family_id  BLOB NOT NULL,
    token_hash BLOB NOT NULL CONSTRAINT refresh_tokens_hash_key UNIQUE CHECK (length(token_hash) = 32),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT,
    CONSTRAINT refresh_tokens_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
) STRICT;

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (tenant_id, user_id);
