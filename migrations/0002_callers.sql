-- Idempotency keys and stop records: what lets callers retry safely and
-- follow their phones to the end, shared by every replica.

CREATE TABLE cphgw_idempotency_keys (
    tenant text NOT NULL CHECK (tenant ~ '^[A-Za-z0-9_-]{1,64}$'),
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- The request the key was first used for: project and distinct ids.
    fingerprint text NOT NULL CHECK (length(fingerprint) = 64),
    request_id text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    -- While the first request runs: until when its replica holds the key.
    lease_until timestamptz,
    -- Once it has answered: the answer, replayed to later requests.
    status smallint CHECK (status BETWEEN 100 AND 599),
    body bytea,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, key),
    CHECK ((status IS NULL) = (body IS NULL)),
    CHECK (status IS NOT NULL OR lease_until IS NOT NULL)
);
CREATE INDEX cphgw_idempotency_keys_expiry ON cphgw_idempotency_keys (expires_at);

CREATE TABLE cphgw_stop_records (
    tenant text NOT NULL CHECK (tenant ~ '^[A-Za-z0-9_-]{1,64}$'),
    request_id text NOT NULL CHECK (length(request_id) BETWEEN 1 AND 128),
    caller text NOT NULL,
    project_id text NOT NULL CHECK (project_id ~ '^[0-9A-Fa-f]{32}$'),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, request_id)
);
CREATE INDEX cphgw_stop_records_expiry ON cphgw_stop_records (expires_at);

-- One row per upstream batch; `entries` is null until the batch has an
-- outcome (what a resumed stop does not send again).
CREATE TABLE cphgw_stop_batches (
    tenant text NOT NULL,
    request_id text NOT NULL,
    index integer NOT NULL CHECK (index >= 0),
    phone_ids text[] NOT NULL CHECK (cardinality(phone_ids) > 0),
    upstream_request_ids text[] NOT NULL DEFAULT '{}',
    entries jsonb CHECK (entries IS NULL OR jsonb_typeof(entries) = 'array'),
    PRIMARY KEY (tenant, request_id, index),
    FOREIGN KEY (tenant, request_id) REFERENCES cphgw_stop_records (tenant, request_id) ON DELETE CASCADE
);
