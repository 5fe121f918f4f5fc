#!/usr/bin/env bash
# PostgreSQL's own cost of what the gateway asks of it, without the gateway:
# PostgreSQL's `pgbench` runs the gateway's statements (the same tables, from
# migrations/, the same statement shapes, generated values in place of the
# gateway's bound arrays) and the machine's CPU is counted per row.
#
#     bash benches/store_floor.sh        # alone: prints the figures
#
# Sourced by benches/run.sh (scenario 7), it adds them to the run's results:
# the least CPU PostgreSQL spends per stop record (written in batches of
# FLOOR_RECORDS, as the record writer does under load) and per keyed stop
# (its key claimed, then answered with its record, FLOOR_KEYS keyed stops'
# claims and as many answers in one statement, as under load), with the
# session settings of the gateway's connections
# (`synchronous_commit = off`). With the database on the gateway's cores, that is a floor
# under what the store and a key can cost, whatever the gateway does.
# Needs psql and pgbench, and PostgreSQL at 127.0.0.1:5432 (user postgres).
# shellcheck shell=bash

# Prints: us per record, us per keyed stop, us per generated row.
floor_main() (
    set -euo pipefail
    local root tmp db secs records keys
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    tmp="$(mktemp -d -t cphgw-floor.XXXXXX)"
    db="cphgw_floor_$$"
    secs="${FLOOR_SECONDS:-6}"
    records="${FLOOR_RECORDS:-100}"
    keys="${FLOOR_KEYS:-8}"
    local pg=(-h 127.0.0.1 -p 5432 -U postgres)
    psql "${pg[@]}" -qAtc "CREATE DATABASE $db" >/dev/null || return 1
    # shellcheck disable=SC2064
    trap "psql ${pg[*]} -qAtc 'DROP DATABASE IF EXISTS $db WITH (FORCE)' >/dev/null 2>&1; rm -rf '$tmp'" EXIT
    local m
    for m in "$root"/migrations/*.sql; do
        psql "${pg[@]}" -d "$db" -q -v ON_ERROR_STOP=1 -f "$m" >/dev/null || return 1
    done

    # Values: :n counts a client's transactions, g a row in the statement.
    local rid="lpad(:n::text, 12, '0') || lpad(:client_id::text, 4, '0') || lpad(g::text, 16, '0')"
    local key="'key-' || :client_id || '-' || :n || '-' || g"
    local body="'[{\"index\":0,\"phone_ids\":[\"0a1b2c3d000000000000000000000007\"],\"upstream_request_ids\":[\"6b8c0f7e2d\"],\"entries\":[{\"phone_id\":\"0a1b2c3d000000000000000000000007\",\"status\":\"accepted\",\"job_id\":\"job-6b8c0f7e2d\"}]}]'"
    # record_cols ID: a record's columns (keyed stops' ids apart from the others').
    record_cols() { echo "'acme', $1, 'svc-orders', '0a1b2c3d4e5f60718293a4b5c6d7e8f9', now(), now() + make_interval(secs => 86400), $body::text::json"; }
    local key_cols="'acme', $key, repeat('f', 64), 'k' || $rid"
    # The record writer's statement (records.rs `insert_records!`).
    printf '\\set n :n + 1\nINSERT INTO cphgw_stop_records (tenant, request_id, caller, project_id, created_at, expires_at, batches) SELECT %s FROM generate_series(1, %s) g;\n' \
        "$(record_cols "$rid")" "$records" >"$tmp/records.sql"
    # Keyed stops' writes (keys.rs `finish_sql`): one statement a group, the
    # answers (with their records) of the stops claimed by the client's
    # previous group and the claims of its next.
    local answered="'acme', 'key-' || :client_id || '-' || :p || '-' || g, repeat('f', 64), 'k' || lpad(:p::text, 12, '0') || lpad(:client_id::text, 4, '0') || lpad(g::text, 16, '0')"
    local answered_rid="lpad(:p::text, 12, '0') || lpad(:client_id::text, 4, '0') || lpad(g::text, 16, '0')"
    {
        printf '\\set n :n + 1\n\\set p :n - 1\n'
        printf 'WITH k AS (INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, status, body, expires_at) SELECT %s, 200::int2, convert_to(%s, '"'UTF8'"'), now() + make_interval(secs => 86400) FROM generate_series(1, %s) g ON CONFLICT (tenant, key) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body, lease_until = NULL RETURNING 1), ' \
            "$answered" "$body" "$keys"
        printf 'r AS (INSERT INTO cphgw_stop_records (tenant, request_id, caller, project_id, created_at, expires_at, batches) SELECT %s FROM generate_series(1, %s) g) ' \
            "$(record_cols "'k' || $answered_rid")" "$keys"
        printf 'INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, lease_until, expires_at) SELECT %s, now() + make_interval(secs => 30), now() + make_interval(secs => 86400) FROM generate_series(1, %s) g ON CONFLICT (tenant, key) DO NOTHING RETURNING tenant, key;\n' \
            "$key_cols" "$keys"
    } >"$tmp/keyed.sql"
    # What making the values costs (subtracted, per generated row).
    printf '\\set n :n + 1\nSELECT count(*) FROM (SELECT %s, %s FROM generate_series(1, %s) g) s;\n' \
        "$(record_cols "$rid")" "$key" "$records" >"$tmp/values.sql"

    busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
    # bench SCRIPT ROWS-PER-TRANSACTION: prints us of CPU per row outside pgbench.
    bench() {
        local c0 c1 tx u s
        c0=$(busy)
        # pgbench's own CPU, from its parent's rusage.
        # The session settings the gateway's store connections use (src/store/postgres).
        read -r u s < <(PGOPTIONS='-c synchronous_commit=off' python3 -c 'import resource, subprocess, sys
ok = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], "w"), stderr=subprocess.STDOUT).returncode == 0
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime, r.ru_stime) if ok else print("failed")' "$tmp/$1.out" \
            pgbench "${pg[@]}" -n -M prepared -c 4 -j 2 -T "$secs" -D n=0 -f "$tmp/$1.sql" "$db")
        c1=$(busy)
        [ "$u" != failed ] || { cat "$tmp/$1.out" >&2; return 1; }
        tx=$(awk '/number of transactions actually processed/ {print $6}' "$tmp/$1.out")
        python3 -c "print(round((($c1 - $c0) / $(getconf CLK_TCK) - $u - $s) * 1e6 / max($tx * $2, 1), 2))"
    }
    local v r k
    v=$(bench values "$records")
    r=$(bench records "$records")
    k=$(bench keyed "$keys")
    # A record is one generated row; a keyed stop three (claim, answer, record).
    python3 -c "print(round(max($r - $v, 0), 1), round(max($k - 3 * $v, 0), 1), $v)"
)

if ! command -v pgbench >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
    echo "store floor: psql and pgbench are needed (Debian: postgresql-client)" >&2
elif [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    read -r FLOOR_RECORD_US FLOOR_KEYED_US FLOOR_VALUES_US < <(floor_main)
    [ -n "${FLOOR_VALUES_US:-}" ] || exit 1
    echo "PostgreSQL CPU per stop record (batches of ${FLOOR_RECORDS:-100}): ${FLOOR_RECORD_US} us"
    echo "PostgreSQL CPU per keyed stop (claim, answer and record, groups of ${FLOOR_KEYS:-8}): ${FLOOR_KEYED_US} us"
    echo "(making the values: ${FLOOR_VALUES_US} us per row, subtracted)"
else
    log "scenario 7: PostgreSQL's own cost of the gateway's statements (pgbench)"
    FLOOR_RECORD_US=
    read -r FLOOR_RECORD_US FLOOR_KEYED_US FLOOR_VALUES_US < <(floor_main) || true
    if [ -n "$FLOOR_RECORD_US" ]; then
        put s7_floor_record_us "$FLOOR_RECORD_US"
        put s7_floor_keyed_us "$FLOOR_KEYED_US"
    else
        log "store floor: pgbench run failed; skipped"
    fi
fi
