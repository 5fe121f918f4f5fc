-- Every stop writes a record row, and every keyed stop a key row: the
-- regular expressions of their CHECK constraints were about a quarter of the
-- database's work per record. The gateway writes only tenant names and
-- project ids it has validated (and the tenants tables, written by admins,
-- keep their patterns); these rows keep a check of their lengths. NOT VALID:
-- the rows already there met the stricter patterns, and are not scanned.
ALTER TABLE cphgw_stop_records
    DROP CONSTRAINT IF EXISTS cphgw_stop_records_tenant_check,
    DROP CONSTRAINT IF EXISTS cphgw_stop_records_project_id_check,
    ADD CONSTRAINT cphgw_stop_records_tenant_length
        CHECK (length(tenant) BETWEEN 1 AND 64) NOT VALID,
    ADD CONSTRAINT cphgw_stop_records_project_id_length
        CHECK (length(project_id) = 32) NOT VALID;

ALTER TABLE cphgw_idempotency_keys
    DROP CONSTRAINT IF EXISTS cphgw_idempotency_keys_tenant_check,
    ADD CONSTRAINT cphgw_idempotency_keys_tenant_length
        CHECK (length(tenant) BETWEEN 1 AND 64) NOT VALID;
