-- BuildPeer metadata schema, PostgreSQL flavour. Keep it in step with
-- ../sqlite/0001_init.sql: the adapters share their SQL text, so table, column
-- and constraint names must match (constraint names are how unique violations
-- become domain conflicts).

CREATE TABLE tenants (
    id         UUID PRIMARY KEY,
    slug       TEXT NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    name       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    tenant_id     UUID NOT NULL REFERENCES tenants (id),
    email         TEXT NOT NULL,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL
                  CONSTRAINT users_role_check CHECK (role IN ('admin', 'supervisor', 'empleado', 'viewer')),
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email),
    -- Target of the composite foreign keys that keep other rows inside the
    -- user's tenant; also the index behind the newest-first user list.
    CONSTRAINT users_tenant_id_key UNIQUE (tenant_id, id)
);

CREATE TABLE projects (
    id          UUID PRIMARY KEY,
    tenant_id   UUID NOT NULL REFERENCES tenants (id),
    name        TEXT NOT NULL,
    code        TEXT,
    address     TEXT,
    created_by  UUID NOT NULL,
    archived_at TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- Scanned backwards, this also serves the newest-first project list, so
    -- no separate (tenant_id, id DESC) index is needed.
    CONSTRAINT projects_tenant_id_key UNIQUE (tenant_id, id),
    CONSTRAINT projects_created_by_fkey FOREIGN KEY (tenant_id, created_by) REFERENCES users (tenant_id, id)
);

CREATE UNIQUE INDEX projects_tenant_code_key ON projects (tenant_id, code) WHERE code IS NOT NULL;

CREATE TABLE project_members (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    project_id UUID NOT NULL,
    user_id    UUID NOT NULL,
    added_at   TIMESTAMPTZ NOT NULL,
    -- Same rule as UNIQUE (project_id, user_id), since a project belongs to one
    -- tenant; leading with tenant_id makes an insert naming another tenant's
    -- project hit the foreign keys below instead of a silent ON CONFLICT.
    CONSTRAINT project_members_key UNIQUE (tenant_id, project_id, user_id),
    CONSTRAINT project_members_project_fkey FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id),
    CONSTRAINT project_members_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE INDEX project_members_user_idx ON project_members (user_id);

CREATE TABLE refresh_tokens (
    id         UUID PRIMARY KEY,
    tenant_id  UUID NOT NULL,
    user_id    UUID NOT NULL,
    family_id  UUID NOT NULL,
    token_hash BYTEA NOT NULL CONSTRAINT refresh_tokens_hash_key UNIQUE CHECK (octet_length(token_hash) = 32),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT refresh_tokens_user_fkey FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (tenant_id, user_id);
