-- A record's batches are written whole and read whole, as text, by the
-- gateway alone; no query looks inside them. `jsonb` converted each record's
-- text into its binary form on the way in and back on the way out: about a
-- fifth of the database's work per record (benches/store_floor.sh). `json`
-- keeps the text as it came, after checking that it is JSON. The type change
-- rewrites the table once: records are kept for `tracking.retention_s` only.
ALTER TABLE cphgw_stop_records
    DROP CONSTRAINT IF EXISTS cphgw_stop_records_batches_check;
ALTER TABLE cphgw_stop_records
    ALTER COLUMN batches TYPE json USING batches::json,
    ADD CONSTRAINT cphgw_stop_records_batches_array
        CHECK (batches IS NULL OR json_typeof(batches) = 'array');
