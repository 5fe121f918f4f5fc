-- A whole stop record (what nearly every stop writes) is one row: its
-- batches in a JSON column of the head, one index entry. The batch rows of
-- cphgw_stop_batches remain for a keyed stop's outcomes as they come (what a
-- resumed stop reads); a head with `batches` set supersedes them.
ALTER TABLE cphgw_stop_records
    ADD COLUMN batches jsonb CHECK (batches IS NULL OR jsonb_typeof(batches) = 'array');

-- Batch rows are written in the same statement as their head and deleted
-- with it by the prune; the foreign key's per-row check was most of the
-- database's work for each record written.
ALTER TABLE cphgw_stop_batches
    DROP CONSTRAINT IF EXISTS cphgw_stop_batches_tenant_request_id_fkey;

-- Records arrive in time order: a BRIN index finds the expired ones for the
-- prune at a fraction of a B-tree's cost on every insert.
DROP INDEX IF EXISTS cphgw_stop_records_expiry;
CREATE INDEX cphgw_stop_records_expiry ON cphgw_stop_records USING brin (expires_at);
