# Sourced by benches/run.sh (its variables and helpers in scope): scenario 7.
# shellcheck shell=bash

# ---------------------------------------------------------------------------
# 7. The shared store: single-id stop rps and CPU with and without it, and with
# an Idempotency-Key, in turns in the same run; propagation of an admin change
# between two replicas
# ---------------------------------------------------------------------------
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 \
    && command -v psql >/dev/null 2>&1; then
    log "scenario 7: the shared store (PostgreSQL at 127.0.0.1:5432)"
    BENCH_DB="cphgw_bench_$$"
    psql -h 127.0.0.1 -U postgres -qAtc "CREATE DATABASE $BENCH_DB" >/dev/null
    drop_bench_db() { psql -h 127.0.0.1 -U postgres -qAtc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true; }
    # The database is on this host: without TLS, as README advises for one
    # on the same host. The second replica keeps the URL's default (TLS when
    # the server offers it, as Debian's does) for the keyed stops' cost with
    # TLS, measured in the same rounds.
    export BENCH_STORE_URL="postgres://postgres@127.0.0.1:5432/$BENCH_DB?sslmode=disable"
    export BENCH_STORE_TLS_URL="postgres://postgres@127.0.0.1:5432/$BENCH_DB"
    read -r ST1_PORT ST1_ADMIN ST2_PORT ST2_ADMIN <<<"$(py freeports 4)"
    for i in 1 2; do
        port_var="ST${i}_PORT"; admin_var="ST${i}_ADMIN"
        sed -e "s/^listen = .*/listen = \"127.0.0.1:${!port_var}\"/" \
            -e "s/^admin_listen = .*/admin_listen = \"127.0.0.1:${!admin_var}\"/" \
            "$T/gateway.toml" >"$T/gateway-store-$i.toml"
        url_env=BENCH_STORE_URL; [ "$i" = 2 ] && url_env=BENCH_STORE_TLS_URL
        printf '\n[store]\nurl_env = "%s"\n' "$url_env" >>"$T/gateway-store-$i.toml"
        # The propagation check uses an HS256 admin token.
        sed -i 's/^\[auth\]$/[auth]\nallow_hs256_admin = true/' "$T/gateway-store-$i.toml"
    done
    "$BIN" tenants import --config "$T/gateway-store-1.toml" >/dev/null || die "tenants import failed"
    "$BIN" serve --config "$T/gateway-store-1.toml" 2>"$T/gateway-store-1.log" &
    ST1_PID=$!; PIDS+=("$ST1_PID")
    "$BIN" serve --config "$T/gateway-store-2.toml" 2>"$T/gateway-store-2.log" &
    ST2_PID=$!; PIDS+=("$ST2_PID")
    wait_http "http://127.0.0.1:$ST1_ADMIN/readyz"
    wait_http "http://127.0.0.1:$ST2_ADMIN/readyz"
    # With a fresh Idempotency-Key on every request (a stop record each).
    cp "$T/gw_hs.lua" "$T/gw_idem.lua"
    cat >>"$T/gw_idem.lua" <<'EOF'
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local n = 0
local run = tostring(os.time())
function request()
    n = n + 1
    wrk.headers["Idempotency-Key"] = "bench-" .. run .. "-" .. tostring(tid) .. "-" .. n
    return wrk.format()
end
EOF
    # The memory-mode gateway (brought to its steady state first, as in
    # scenario 1), the store without keys, the store with keys (without and
    # with TLS to the database): in turns,
    # ROUNDS times, each figure the median of its rounds (the machine's
    # speed moves from minute to minute).
    wrk -t"$THREADS" -c"$CONNS" -d"${BENCH_FILL:-6}s" -s "$T/gw_hs.lua" "$GW$STOP_PATH" >/dev/null
    for r in $(seq "$ROUNDS"); do
        run_wrk "s7_mem_r$r" gw_hs "$GW$STOP_PATH" "$GW_PID"
        run_wrk "s7_store_r$r" gw_hs "http://127.0.0.1:$ST1_PORT$STOP_PATH" "$ST1_PID"
        run_wrk "s7_idem_r$r" gw_idem "http://127.0.0.1:$ST1_PORT$STOP_PATH" "$ST1_PID"
        run_wrk "s7_idemtls_r$r" gw_idem "http://127.0.0.1:$ST2_PORT$STOP_PATH" "$ST2_PID"
    done
    python3 - "$RESULTS" "$ROUNDS" <<'PY' >>"$RESULTS"
import statistics, sys
path, rounds = sys.argv[1], int(sys.argv[2])
got = dict(line.rstrip("\n").split("=", 1) for line in open(path) if "=" in line)
for mode in ("s7_mem", "s7_store", "s7_idem", "s7_idemtls"):
    for field in ("rps", "p50", "p99", "errors", "sim_cpu_us", "proxy_cpu_us"):
        vals = [float(got[f"{mode}_r{r}_{field}"]) for r in range(1, rounds + 1)]
        print(f"{mode}_{field}={statistics.median(vals)}")
    for field in ("rps", "p50"):
        print(f"{mode}_rounds_{field}=" + ",".join(f"{float(got[f'{mode}_r{r}_{field}']):g}" for r in range(1, rounds + 1)))
PY
    ADMIN_TOKEN="$("$BIN" token --admin --config "$T/gateway.toml")"
    put s7_propagation "$(python3 - "$ST1_ADMIN" "$ST2_ADMIN" "$ADMIN_TOKEN" "$REGION" <<'PY'
import json, sys, time, urllib.request, urllib.error
a, b, token, region = sys.argv[1:5]
def call(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
times = []
for i in range(20):
    project = f"{i:08x}4e5f60718293a4b5c6d7e8f9"
    body = {"default_project": project, "projects": [{"project_id": project, "region": region, "credential": "default"}]}
    t0 = time.monotonic()
    assert call(a, "PUT", f"/admin/v1/tenants/bench-{i}", body) in (200, 201)
    while call(b, "GET", f"/admin/v1/tenants/bench-{i}") != 200:
        if time.monotonic() - t0 > 5: raise SystemExit("no propagation within 5 s")
        time.sleep(0.002)
    times.append((time.monotonic() - t0) * 1000)
times.sort()
print(f"{times[len(times) // 2]:.1f},{times[-1]:.1f}")
PY
)"
    for pid in "$ST1_PID" "$ST2_PID"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; forget_pid "$pid"; done
    drop_bench_db
    log "scenario 7: propagation p50,max ms $(grep '^s7_propagation=' "$RESULTS" | cut -d= -f2)"
else
    log "scenario 7 skipped: no PostgreSQL at 127.0.0.1:5432 (psql, pg_isready)"
fi

