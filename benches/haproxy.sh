# Sourced by benches/run.sh (its variables and helpers in scope): starts
# HAProxy as the authenticating-proxy peer and checks that it verifies the token.
# shellcheck shell=bash

# ---------------------------------------------------------------------------
# HAProxy: the authenticating-proxy peer. It verifies the same HS256 token
# (signature, alg, iss, aud, exp) on every request, rewrites the path to the
# project form, swaps the caller's token for a simulator IAM token, and reuses
# upstream connections, as the gateway does for one project.
# ---------------------------------------------------------------------------
cat >"$T/haproxy.cfg" <<EOF
global
    maxconn 1024
    log stderr format raw local0 err
defaults
    mode http
    log global
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend gw
    bind 127.0.0.1:$HAPROXY_PORT
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str HS256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$BENCH_JWT_SECRET") -m int 1 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str $ISSUER }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str $AUDIENCE }
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date()
    http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int le 0 }
    http-request deny deny_status 404 unless { path $STOP_PATH }
    http-request set-path $SIM_STOP_PATH
    http-request del-header Authorization
    http-request set-header X-Auth-Token $SIM_TOKEN
    default_backend sim
backend sim
    server sim 127.0.0.1:$SIM_PORT
EOF
"$HAPROXY_BIN" -c -q -f "$T/haproxy.cfg" || die "haproxy refused its configuration"
log "starting haproxy on 127.0.0.1:$HAPROXY_PORT"
"$HAPROXY_BIN" -db -f "$T/haproxy.cfg" 2>"$T/haproxy.log" &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")
HAPROXY="http://127.0.0.1:$HAPROXY_PORT"
for _ in $(seq 100); do
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$HAPROXY$STOP_PATH" \
        -H "Authorization: Bearer $HS_TOKEN" -H 'Content-Type: application/json' -d "$ONE_BODY" 2>/dev/null || true)
    [ "$code" = 200 ] && break
    sleep 0.05
done
[ "$code" = 200 ] || die "haproxy -> sim answered $code"
# A broken signature: its first character changed (all six of its bits count;
# the last character's low bits are padding, so changing it may not break it).
SIG="${HS_TOKEN##*.}"
if [ "${SIG:0:1}" = A ]; then BAD_FIRST=B; else BAD_FIRST=A; fi
BROKEN_HS_TOKEN="${HS_TOKEN%.*}.$BAD_FIRST${SIG:1}"
for bad in "$RS_TOKEN" "$BROKEN_HS_TOKEN"; do  # another algorithm, a broken signature: refused
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$HAPROXY$STOP_PATH" \
        -H "Authorization: Bearer $bad" -H 'Content-Type: application/json' -d "$ONE_BODY")
    [ "$code" = 401 ] || die "haproxy answered $code to a token it must refuse"
done
