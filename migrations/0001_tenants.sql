-- Tenant-to-project mappings, their change counter, and the admin audit.
--
-- The constraints repeat the gateway's own validation, so that no row the
-- gateway would refuse can be written: names and ids have the contract's
-- shapes, a tenant's projects are distinct, and its default project is one
-- of them (a deferred foreign key, checked at commit).

CREATE TABLE cphgw_meta (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    -- Bumped by every change of the mapping; below 2^53 so that a float
    -- (a Prometheus gauge, a JSON number) holds it exactly.
    tenants_revision bigint NOT NULL DEFAULT 0
        CHECK (tenants_revision >= 0 AND tenants_revision < 9007199254740992)
);
INSERT INTO cphgw_meta DEFAULT VALUES;

CREATE TABLE cphgw_tenants (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
    default_project text NOT NULL,
    -- The revision at which this tenant was last written.
    revision bigint NOT NULL CHECK (revision > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cphgw_tenant_projects (
    tenant text NOT NULL REFERENCES cphgw_tenants (name) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    project_id text NOT NULL CHECK (project_id ~ '^[0-9A-Fa-f]{32}$'),
    region text NOT NULL CHECK (region ~ '^[a-z]+(-[a-z]+)+-[0-9]+$' AND length(region) <= 32),
    credential text NOT NULL CHECK (length(credential) BETWEEN 1 AND 128),
    PRIMARY KEY (tenant, project_id),
    UNIQUE (tenant, position)
);

ALTER TABLE cphgw_tenants
    ADD CONSTRAINT cphgw_default_project_is_listed
    FOREIGN KEY (name, default_project)
    REFERENCES cphgw_tenant_projects (tenant, project_id)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE cphgw_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    who text NOT NULL CHECK (length(who) BETWEEN 1 AND 256),
    action text NOT NULL CHECK (action IN ('put', 'delete', 'import', 'reload')),
    tenant text CHECK (tenant IS NULL OR tenant ~ '^[A-Za-z0-9_-]{1,64}$'),
    before jsonb,
    after jsonb
);
CREATE INDEX cphgw_audit_by_tenant ON cphgw_audit (tenant, id DESC);
CREATE INDEX cphgw_audit_by_time ON cphgw_audit (at);
