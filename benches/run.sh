#!/usr/bin/env bash
# End-to-end benchmark of cph-gateway against its simulator, with nginx as the
# reference reverse proxy. One command on a fresh Debian 12 machine (root):
#
#     bash benches/run.sh
#
# Installs wrk, nginx and haproxy if missing, builds the release binary, starts
# the simulator, the gateway, nginx (plain reverse proxy) and HAProxy (verifying
# the same HS256 JWT, the authenticating-proxy peer) on loopback ports, runs the
# scenarios and
# prints one table with the targets marked PASS/MISS. Everything it writes
# goes to a temporary directory; every process it starts is stopped on exit.
#
# Environment knobs (defaults in brackets): BENCH_DURATION [10] seconds per
# wrk run, BENCH_WARMUP [2], BENCH_CONNECTIONS [64], BENCH_THREADS [2],
# BENCH_ROUNDS [3] turns of the four peers in scenario 1 (and of the three
# store modes in scenario 7), BENCH_FILL [6]
# seconds of untimed stops that first bring the gateway's records to their bound.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START_TS=$(date +%s)

DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
CONNS="${BENCH_CONNECTIONS:-64}"
THREADS="${BENCH_THREADS:-2}"

TENANT=acme
PROJECT=0a1b2c3d4e5f60718293a4b5c6d7e8f9
REGION=cn-east-3
ISSUER=https://idp.bench.local
AUDIENCE=cph-gateway

log() { printf '[bench %4ss] %s\n' "$(($(date +%s) - START_TS))" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY_BIN="$(command -v haproxy || echo /usr/sbin/haproxy)"
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

log "cargo build --release --locked"
BUILD_START=$(date +%s)
cargo build --release --locked 2>&1 | tail -n 3 >&2
BUILD_S=$(($(date +%s) - BUILD_START))
BIN="$ROOT/target/release/cph-gateway"
[ -x "$BIN" ] || die "no $BIN"

# ---------------------------------------------------------------------------
# Temp dir, process bookkeeping
# ---------------------------------------------------------------------------
T="$(mktemp -d -t cphgw-bench.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$rc" -ne 0 ]; then
        log "exit $rc; last gateway/sim/nginx log lines:"
        tail -n 5 "$T"/gateway*.log "$T"/sim.log "$T"/nginx/error.log "$T"/haproxy.log 2>/dev/null >&2
    fi
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() { # forget_pid PID: drop from the cleanup list
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

RESULTS="$T/results.txt"
: >"$RESULTS"
put() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS"; }
put load_start "$(cut -d" " -f1-3 /proc/loadavg)"
if awk -v n="$(nproc)" '{ exit !($1 > n / 2) }' /proc/loadavg; then
    log "WARNING: load average $(cut -d' ' -f1 /proc/loadavg) on $(nproc) cores: other work will skew the numbers"
fi

# ---------------------------------------------------------------------------
# The python helper (benches/bench.py): ports, JWTs, wrk parsing, RSS sampler, clients, table
# ---------------------------------------------------------------------------
py() { python3 "$ROOT/benches/bench.py" "$@"; }

read -r SIM_PORT NGINX_PORT GW_PORT GW_ADMIN_PORT HAPROXY_PORT <<<"$(py freeports 5)"
SIM="http://127.0.0.1:$SIM_PORT"
GW="http://127.0.0.1:$GW_PORT"
GW_ADMIN="http://127.0.0.1:$GW_ADMIN_PORT"

wait_http() { # wait_http URL [seconds]
    local url=$1 secs=${2:-20} i
    for i in $(seq $((secs * 20))); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    die "$url did not answer within ${secs}s"
}

# ---------------------------------------------------------------------------
# Simulator
# ---------------------------------------------------------------------------
log "starting the simulator on $SIM"
"$BIN" sim --listen "127.0.0.1:$SIM_PORT" --latency-ms 0 2>"$T/sim.log" &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_http "$SIM/sim/v1/stats"

set_latency() {
    curl -fsS -o /dev/null -X PUT "$SIM/sim/v1/faults" \
        -H 'Content-Type: application/json' -d "{\"latency_ms\":$1}"
}
start_phones() { curl -fsS -o /dev/null -X POST "$SIM/sim/v1/phones/start"; }  # stopped phones run again
sim_stat() { curl -fsS "$SIM/sim/v1/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# ---------------------------------------------------------------------------
# Gateway config
# ---------------------------------------------------------------------------
cat >"$T/tenants.toml" <<EOF
[tenants.$TENANT]
default_project = "$PROJECT"

[[tenants.$TENANT.projects]]
project_id = "$PROJECT"
region = "$REGION"
credential = "default"
EOF
cat >"$T/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$GW_ADMIN_PORT"
shutdown_grace_ms = 2000

[auth]
issuer = "$ISSUER"
audience = "$AUDIENCE"
hs256_secret_env = "BENCH_JWT_SECRET"
public_key_files = ["$ROOT/tests/keys/rsa-public.pem", "$ROOT/tests/keys/ec-public.pem"]

[iam]
endpoint = "$SIM"

[iam.credentials.default]
domain = "sim-domain"
user = "sim-user"
password_env = "BENCH_IAM_PASSWORD"

[upstream]
cph_endpoint = "$SIM"
max_batch_size = 100
max_concurrency_per_request = 8

[limits]
tenant_rate_per_s = 10000000

[tenants]
file = "$T/tenants.toml"
EOF
export BENCH_JWT_SECRET="bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export BENCH_IAM_PASSWORD=sim-password
unset RUST_LOG LOG_FORMAT  # default level (info), text format, to a file
for v in $(compgen -e | grep '^CPHGW__' || true); do unset "$v"; done  # only the generated config counts

GW_PID=
GW_RUN=0
start_gateway() {
    GW_RUN=$((GW_RUN + 1))
    "$BIN" serve --config "$T/gateway.toml" 2>"$T/gateway-$GW_RUN.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_http "$GW_ADMIN/readyz"
}
stop_gateway() {
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
    forget_pid "$GW_PID"
}
proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
RSS_SAMPLER=
rss_start() { python3 "$ROOT/benches/bench.py" rss "$GW_PID" "$T/rss-$1" & RSS_SAMPLER=$!; PIDS+=("$RSS_SAMPLER"); }
rss_stop() { # rss_stop NAME -> puts rss_NAME_peak
    kill -TERM "$RSS_SAMPLER"; wait "$RSS_SAMPLER" 2>/dev/null || true
    forget_pid "$RSS_SAMPLER"
    put "rss_$1_peak" "$(cat "$T/rss-$1")"
}

log "starting the gateway on $GW (admin $GW_ADMIN)"
start_gateway
sleep 0.5
put rss_idle "$(proc_kib "$GW_PID" VmRSS)"

# ---------------------------------------------------------------------------
# nginx
# ---------------------------------------------------------------------------
mkdir -p "$T/nginx/tmp"
cat >"$T/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
daemon off;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $T/nginx/tmp/body;
    proxy_temp_path $T/nginx/tmp/proxy;
    upstream sim {
        server 127.0.0.1:$SIM_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
log "starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX_BIN" -p "$T/nginx" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_http "http://127.0.0.1:$NGINX_PORT/sim/v1/stats"

# ---------------------------------------------------------------------------
# Tokens and bodies
# ---------------------------------------------------------------------------
PHONE="${PROJECT:0:8}$(printf '%024x' 7)"
ONE_BODY="{\"phone_ids\":[\"$PHONE\"]}"
ids_body() { # ids_body N FILE: the first N seeded phones of the project
    python3 - "$1" "$2" "$PROJECT" <<'PY'
import json, sys
n, out, project = int(sys.argv[1]), sys.argv[2], sys.argv[3]
json.dump({"phone_ids": [project[:8] + format(i, "024x") for i in range(n)]}, open(out, "w"))
PY
}
for n in 100 1000 10000; do ids_body "$n" "$T/ids-$n.json"; done

IAM_BODY="{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"sim-user\",\"password\":\"sim-password\",\"domain\":{\"name\":\"sim-domain\"}}}},\"scope\":{\"project\":{\"id\":\"$PROJECT\"}}}}"
SIM_TOKEN="$(curl -fsS -D - -o /dev/null -X POST "$SIM/v3/auth/tokens" \
    -H 'Content-Type: application/json' -d "$IAM_BODY" |
    awk -F': ' 'tolower($1) == "x-subject-token" { sub(/\r$/, "", $2); print $2 }')"
[ -n "$SIM_TOKEN" ] || die "no IAM token from the simulator"

HS_TOKEN="$("$BIN" token --tenant "$TENANT" --config "$T/gateway.toml")"
RS_TOKEN="$(py mint RS256 "$ROOT/tests/keys/rsa-private.pem" "$ISSUER" "$AUDIENCE" "$TENANT")"
ES_TOKEN="$(py mint ES256 "$ROOT/tests/keys/ec-private.pem" "$ISSUER" "$AUDIENCE" "$TENANT")"

STOP_PATH=/v1/cloud-phone/phones/batch-stop
SIM_STOP_PATH="/v1/$PROJECT/cloud-phone/phones/batch-stop"
for alg in HS RS ES; do
    tok_var="${alg}_TOKEN"
    code=$(curl -sS -o "$T/check.json" -w '%{http_code}' -X POST "$GW$STOP_PATH" \
        -H "Authorization: Bearer ${!tok_var}" -H 'Content-Type: application/json' -d "$ONE_BODY")
    [ "$code" = 200 ] || die "gateway answered $code to the ${alg}256 token: $(cat "$T/check.json")"
done
code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$NGINX_PORT$SIM_STOP_PATH" \
    -H "X-Auth-Token: $SIM_TOKEN" -H 'Content-Type: application/json' -d "$ONE_BODY")
[ "$code" = 200 ] || die "nginx -> sim answered $code"

. "$ROOT/benches/haproxy.sh"  # HAPROXY_PID, HAPROXY

lua() { # lua NAME HEADER-NAME HEADER-VALUE
    cat >"$T/$1.lua" <<EOF
wrk.method = "POST"
wrk.body = '$ONE_BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["$2"] = "$3"
EOF
}
lua sim X-Auth-Token "$SIM_TOKEN"
lua gw_hs Authorization "Bearer $HS_TOKEN"
lua gw_rs Authorization "Bearer $RS_TOKEN"
lua gw_es Authorization "Bearer $ES_TOKEN"

TICK=$(getconf CLK_TCK)
run_wrk() { # run_wrk KEY LUA URL [PROXY_PID [tree]]: also CPU per request of the proxy and the sim
    local key=$1 script=$2 url=$3 proxy=${4:-} tree=${5:-}
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" -s "$T/$script.lua" "$url" >/dev/null
    local p0=0 p1=0 s0 s1
    s0=$(py cpu "$SIM_PID"); [ -n "$proxy" ] && p0=$(py cpu "$proxy" $tree)
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$T/$script.lua" "$url" >"$T/wrk-$key.txt"
    s1=$(py cpu "$SIM_PID"); [ -n "$proxy" ] && p1=$(py cpu "$proxy" $tree)
    local rps p50 p99 n err
    read -r rps p50 p99 n err <<<"$(py wrkparse "$T/wrk-$key.txt")"
    put "${key}_rps" "$rps"; put "${key}_p50" "$p50"; put "${key}_p99" "$p99"; put "${key}_errors" "$err"
    put "${key}_sim_cpu_us" "$(python3 -c "print(($s1 - $s0) / $TICK * 1e6 / max($n, 1))")"
    put "${key}_proxy_cpu_us" "$(python3 -c "print(($p1 - $p0) / $TICK * 1e6 / max($n, 1))")"
    log "$key: $rps rps, p50 $p50 ms, p99 $p99 ms ($n requests, $err errors)"
}

# ---------------------------------------------------------------------------
# 1. Proxy overhead
# ---------------------------------------------------------------------------
log "scenario 1: proxy overhead"
# The machine's speed moves from minute to minute (other tenants of the
# host), so the peers run in turns, ROUNDS times, and each figure is the
# median of its rounds: a slow minute then falls on every peer alike.
ROUNDS="${BENCH_ROUNDS:-3}"
put rounds "$ROUNDS"
# First the gateway is brought to the state it spends its life in: its
# memory-mode stop records at their 32 MiB bound (about 45,000 single-id
# records), so that it evicts as it keeps. Until then each stop also grows
# the process (page faults): 10-25 % more CPU per request in the first
# 50,000 stops after a start.
wrk -t"$THREADS" -c"$CONNS" -d"${BENCH_FILL:-6}s" -s "$T/gw_hs.lua" "$GW$STOP_PATH" >/dev/null
rss_start s1
log0=$(stat -c %s "$T/gateway-$GW_RUN.log")
for r in $(seq "$ROUNDS"); do
    run_wrk "sim_r$r" sim "$SIM$SIM_STOP_PATH"
    run_wrk "nginx_r$r" sim "http://127.0.0.1:$NGINX_PORT$SIM_STOP_PATH" "$NGINX_PID" tree
    run_wrk "haproxy_r$r" gw_hs "$HAPROXY$STOP_PATH" "$HAPROXY_PID"
    run_wrk "gw_hs_r$r" gw_hs "$GW$STOP_PATH" "$GW_PID"
done
log1=$(stat -c %s "$T/gateway-$GW_RUN.log")
rss_stop s1
# Each peer's figures: the medians of its rounds.
python3 - "$RESULTS" "$ROUNDS" <<'PY' >>"$RESULTS"
import statistics, sys
path, rounds = sys.argv[1], int(sys.argv[2])
got = dict(line.rstrip("\n").split("=", 1) for line in open(path) if "=" in line)
for peer in ("sim", "nginx", "haproxy", "gw_hs"):
    for field in ("rps", "p50", "p99", "errors", "sim_cpu_us", "proxy_cpu_us"):
        vals = [float(got[f"{peer}_r{r}_{field}"]) for r in range(1, rounds + 1)]
        print(f"{peer}_{field}={statistics.median(vals)}")
    print(f"{peer}_rounds_rps=" + ",".join(f"{float(got[f'{peer}_r{r}_rps']):.0f}" for r in range(1, rounds + 1)))
    print(f"{peer}_rounds_cpu=" + ",".join(f"{float(got[f'{peer}_r{r}_proxy_cpu_us'] if peer != 'sim' else got[f'{peer}_r{r}_sim_cpu_us']):.0f}" for r in range(1, rounds + 1)))
PY
# Log bytes per request: the gateway's rounds (warm-ups too) wrote one line
# per request.
lines=$(tail -c +$((log0 + 1)) "$T/gateway-$GW_RUN.log" | head -c $((log1 - log0)) | wc -l)
put gw_hs_log_bytes "$(python3 -c "print(($log1 - $log0) / max($lines, 1))")"
put rss_s1_end "$(proc_kib "$GW_PID" VmRSS)"

# ---------------------------------------------------------------------------
# 2. Caller-auth cost
# ---------------------------------------------------------------------------
log "scenario 2: caller-auth cost"
rss_start s2rs
run_wrk gw_rs gw_rs "$GW$STOP_PATH" "$GW_PID"
rss_stop s2rs
rss_start s2es
run_wrk gw_es gw_es "$GW$STOP_PATH" "$GW_PID"
rss_stop s2es
put hwm_s2_end "$(proc_kib "$GW_PID" VmHWM)"

# ---------------------------------------------------------------------------
# 3. Fan-out (and its memory) on a fresh gateway, so that VmHWM means something
# ---------------------------------------------------------------------------
log "scenario 3: fan-out of 10,000 ids at 20 ms sim latency (fresh gateway)"
stop_gateway
start_gateway
curl -fsS -o /dev/null -X POST "$GW$STOP_PATH" -H "Authorization: Bearer $HS_TOKEN" \
    -H 'Content-Type: application/json' -d "$ONE_BODY"
sleep 0.3
put rss_s3_before "$(proc_kib "$GW_PID" VmRSS)"
put hwm_s3_before "$(proc_kib "$GW_PID" VmHWM)"
set_latency 20
rss_start s3
walls=()
for i in 0 1 2 3; do  # run 0 is the warm-up
    start_phones
    out=$(curl -sS -o "$T/fan.json" -w '%{http_code} %{time_total}' -X POST "$GW$STOP_PATH" \
        -H "Authorization: Bearer $HS_TOKEN" -H 'Content-Type: application/json' -d @"$T/ids-10000.json")
    read -r code secs <<<"$out"
    [ "$code" = 200 ] || die "fan-out answered $code"
    read -r entries with_job <<<"$(py check_stop "$T/fan.json")"
    [ "$entries" = 10000 ] && [ "$with_job" = 10000 ] || die "fan-out: $entries entries, $with_job with a job"
    ms=$(python3 -c "print(round($secs * 1000))")
    [ "$i" -gt 0 ] && walls+=("$ms")
    log "fan-out run $i: $ms ms"
done
rss_stop s3
put hwm_s3_after "$(proc_kib "$GW_PID" VmHWM)"
# The baseline: a direct client making the same 100 batch calls of 100 ids,
# 8 at once, against the same simulator at the same latency.
dwalls=()
for i in 0 1 2 3; do  # run 0 is the warm-up
    start_phones
    read -r ms calls jobs <<<"$(py direct_fanout "$SIM_PORT" "$SIM_STOP_PATH" "$SIM_TOKEN" "$T/ids-10000.json" 100 8)"
    [ "$calls" = 100 ] && [ "$jobs" = 10000 ] || die "direct fan-out: $calls calls answered 200, $jobs jobs"
    [ "$i" -gt 0 ] && dwalls+=("$ms")
    log "direct fan-out run $i: $ms ms"
done
read -r best median <<<"$(printf '%s\n' "${dwalls[@]}" | sort -n | awk '{a[NR]=$1} END {print a[1], a[int((NR+1)/2)]}')"
put direct_best_ms "$best"; put direct_median_ms "$median"; put direct_walls "$(IFS=,; echo "${dwalls[*]}")"
set_latency 0
read -r best median <<<"$(printf '%s\n' "${walls[@]}" | sort -n | awk '{a[NR]=$1} END {print a[1], a[int((NR+1)/2)]}')"
put fan_best_ms "$best"; put fan_median_ms "$median"; put fan_walls "$(IFS=,; echo "${walls[*]}")"

# ---------------------------------------------------------------------------
# 4. Scaling with size: wall time and gateway CPU per id (sim latency 0)
# Every size stops 200,000 ids in all, so that each CPU reading spans many
# clock ticks (100 ids x 2,000, 1,000 x 200, 10,000 x 20 requests).
# ---------------------------------------------------------------------------
log "scenario 4: scaling with size"
rss_start s4
for n in 100 1000 10000; do
    reqs=$((200000 / n))
    py seq "$GW_PORT" "$STOP_PATH" "$HS_TOKEN" "$T/ids-$n.json" $((reqs / 10)) >/dev/null  # warm-up
    c0=$(py cpu "$GW_PID"); s0=$(py cpu "$SIM_PID")
    read -r ok p50 p99 wall <<<"$(py seq "$GW_PORT" "$STOP_PATH" "$HS_TOKEN" "$T/ids-$n.json" "$reqs")"
    c1=$(py cpu "$GW_PID"); s1=$(py cpu "$SIM_PID")
    [ "$ok" = "$reqs" ] || die "scaling $n: only $ok of $reqs answered 200"
    read -r per_id per_req rps <<<"$(python3 -c "
t = ($c1 - $c0) / $TICK * 1e6
print(f'{t / ($reqs * $n):.3f} {t / $reqs:.1f} {$reqs / $wall:.2f}')")"
    put "s4_${n}_reqs" "$reqs"; put "s4_${n}_p50" "$p50"; put "s4_${n}_p99" "$p99"; put "s4_${n}_rps" "$rps"
    put "s4_${n}_cpu_us_per_id" "$per_id"; put "s4_${n}_cpu_us_per_req" "$per_req"
    put "s4_${n}_sim_cpu_us_per_id" "$(python3 -c "print(($s1 - $s0) / $TICK * 1e6 / ($reqs * $n))")"
    log "scaling $n ids: $reqs requests, p50 $p50 ms, CPU $per_id us/id ($((c1 - c0)) ticks)"
done
# The loop above stops the same phones again and again: after the first
# request CPH refuses each one (CPS.0010, an error entry per phone). Stops of
# running phones (a job each), the simulator starting them before each request:
reqs=20
py seq "$GW_PORT" "$STOP_PATH" "$HS_TOKEN" "$T/ids-10000.json" 2 "$SIM_PORT" >/dev/null  # warm-up
c0=$(py cpu "$GW_PID"); s0=$(py cpu "$SIM_PID")
read -r ok p50 p99 wall <<<"$(py seq "$GW_PORT" "$STOP_PATH" "$HS_TOKEN" "$T/ids-10000.json" "$reqs" "$SIM_PORT")"
c1=$(py cpu "$GW_PID"); s1=$(py cpu "$SIM_PID")
[ "$ok" = "$reqs" ] || die "scaling, running phones: only $ok of $reqs answered 200"
read -r per_id per_req rps <<<"$(python3 -c "
t = ($c1 - $c0) / $TICK * 1e6
print(f'{t / ($reqs * 10000):.3f} {t / $reqs:.1f} {$reqs / $wall:.2f}')")"
put s4f_reqs "$reqs"; put s4f_p50 "$p50"; put s4f_p99 "$p99"; put s4f_rps "$rps"
put s4f_cpu_us_per_id "$per_id"; put s4f_cpu_us_per_req "$per_req"
put s4f_sim_cpu_us_per_id "$(python3 -c "print(($s1 - $s0) / $TICK * 1e6 / ($reqs * 10000))")"
log "scaling 10000 ids, running phones: p50 $p50 ms, CPU $per_id us/id ($((c1 - c0)) ticks)"
rss_stop s4

# ---------------------------------------------------------------------------
# 6. Token reuse: 1,000 concurrent first requests on a cold gateway
# ---------------------------------------------------------------------------
log "scenario 6: 1,000 concurrent first requests on a cold gateway"
stop_gateway
curl -fsS -o /dev/null -X POST "$SIM/sim/v1/stats/reset"
start_gateway
rss_start s6
burst=$(py burst "$GW_PORT" "$STOP_PATH" "$HS_TOKEN" "$ONE_BODY" 1000)
rss_stop s6
iam=$(sim_stat iam_requests)
put s6_iam "$iam"
put s6_statuses "$(python3 -c "import json,sys; print(' '.join(f'{k}:{v}' for k,v in json.loads(sys.argv[1])['statuses'].items()))" "$burst")"
put s6_wall "$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['wall_s'])" "$burst")"
put s6_all_ok "$(python3 -c "import json,sys; print(int(json.loads(sys.argv[1])['statuses'].get('200', 0) == 1000))" "$burst")"
log "scenario 6: $burst, IAM requests $iam"

. "$ROOT/benches/store.sh"  # scenario 7: the shared store
if [ -n "${BENCH_DB:-}" ]; then
    . "$ROOT/benches/store_floor.sh"  # scenario 7: PostgreSQL's own cost (pgbench)
fi

# ---------------------------------------------------------------------------
# Table
# ---------------------------------------------------------------------------
put nproc "$(nproc)"
put cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
put kernel "$(uname -r)"
put load_end "$(cut -d" " -f1-3 /proc/loadavg)"
put threads "$THREADS"; put conns "$CONNS"; put duration "$DURATION"; put warmup "$WARMUP"
put build_s "$BUILD_S"
put total_s "$(($(date +%s) - START_TS))"
echo
py table "$RESULTS"
