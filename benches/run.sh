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
# wrk run, BENCH_WARMUP [2], BENCH_CONNECTIONS [64], BENCH_THREADS [2].
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
# The python helper: ports, JWTs, wrk parsing, RSS sampler, clients, table
# ---------------------------------------------------------------------------
cat >"$T/bench.py" <<'PY'
import base64, collections, concurrent.futures, http.client, json, os, signal
import socket, statistics, subprocess, sys, threading, time

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def freeports(n):
    socks, ports = [], []
    for _ in range(int(n)):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks: s.close()
    print(" ".join(map(str, ports)))

def der_to_raw(der, size=32):
    # ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        ln = der[i + 1]; v = der[i + 2:i + 2 + ln]; i += 2 + ln
        v = v.lstrip(b"\x00")
        out += v.rjust(size, b"\x00")
    return out

def mint(alg, keyfile, iss, aud, tenant, sub="bench"):
    now = int(time.time())
    header = {"alg": alg, "typ": "JWT"}
    claims = {"iss": iss, "aud": aud, "sub": sub, "tenant": tenant,
              "iat": now, "nbf": now, "exp": now + 3600, "roles": []}
    si = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
         b64u(json.dumps(claims, separators=(",", ":")).encode())
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keyfile],
                         input=si.encode(), capture_output=True, check=True).stdout
    if alg == "ES256":
        sig = der_to_raw(sig)
    print(si + "." + b64u(sig))

def to_ms(s):
    s = s.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if s.endswith(unit):
            return float(s[:-len(unit)]) * f
    return float(s)

def wrkparse(path):
    """Prints: rps p50_ms p99_ms requests errors (non-2xx + socket errors)."""
    rps = p50 = p99 = float("nan"); reqs = 0; errors = 0
    for line in open(path):
        w = line.split()
        if line.startswith("Requests/sec:"): rps = float(w[1])
        elif w[:1] == ["50%"]: p50 = to_ms(w[1])
        elif w[:1] == ["99%"]: p99 = to_ms(w[1])
        elif "requests in" in line: reqs = int(w[0])
        elif line.strip().startswith("Non-2xx"): errors += int(w[-1])
        elif line.strip().startswith("Socket errors"):
            errors += sum(int(x.strip(",")) for x in w[3::2])
    print(f"{rps:.1f} {p50:.3f} {p99:.3f} {reqs} {errors}")

def rss_sampler(pid, out, interval=0.01):
    """Samples VmRSS of pid every interval; writes the max (KiB) on SIGTERM."""
    peak = [0]
    def done(*_):
        with open(out, "w") as f: f.write(str(peak[0]))
        sys.exit(0)
    signal.signal(signal.SIGTERM, done)
    path = f"/proc/{pid}/status"
    while True:
        try:
            for line in open(path):
                if line.startswith("VmRSS:"):
                    v = int(line.split()[1])
                    if v > peak[0]: peak[0] = v
                    break
        except OSError:
            done()
        time.sleep(interval)

def post(conn, path, token, body):
    conn.request("POST", path, body=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer " + token})
    r = conn.getresponse(); data = r.read()
    return r.status, data

def seq(port, path, token, bodyfile, n):
    """n sequential keep-alive requests; prints: ok_count p50_ms p99_ms wall_s."""
    body = open(bodyfile, "rb").read()
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    times, ok = [], 0
    t0 = time.perf_counter()
    for _ in range(int(n)):
        s = time.perf_counter()
        st, _ = post(conn, path, token, body)
        times.append((time.perf_counter() - s) * 1e3)
        ok += st == 200
    wall = time.perf_counter() - t0
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{ok} {statistics.median(times):.3f} {p99:.3f} {wall:.3f}")

def burst(port, path, token, body, n):
    """n concurrent first requests, each on its own connection, released together."""
    n = int(n); body = body.encode()
    barrier = threading.Barrier(n)
    def one(_):
        conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
        conn.connect()
        barrier.wait()
        try:
            return post(conn, path, token, body)[0]
        except Exception as e:
            return type(e).__name__
        finally:
            conn.close()
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        statuses = collections.Counter(ex.map(one, range(n)))
    wall = time.perf_counter() - t0
    print(json.dumps({"statuses": {str(k): v for k, v in statuses.items()},
                      "wall_s": round(wall, 3)}))

def direct_fanout(port, path, token, bodyfile, batch, conc):
    """The fan-out baseline: the same batch calls the gateway makes (batch ids
    each, conc at once, one keep-alive connection per worker), straight to the
    simulator. Prints: wall_ms calls_ok ids_with_job."""
    ids = json.load(open(bodyfile))["phone_ids"]; batch, conc = int(batch), int(conc)
    bodies = [json.dumps({"phone_ids": ids[i:i + batch]}, separators=(",", ":")).encode()
              for i in range(0, len(ids), batch)]
    lock = threading.Lock(); todo = list(range(len(bodies)))
    conns = [http.client.HTTPConnection("127.0.0.1", int(port), timeout=60) for _ in range(conc)]
    for c in conns: c.connect()
    def worker(conn):
        ok = jobs = 0
        while True:
            with lock:
                if not todo: return ok, jobs
                i = todo.pop(0)
            conn.request("POST", path, body=bodies[i], headers={
                "Content-Type": "application/json", "X-Auth-Token": token})
            r = conn.getresponse(); d = json.loads(r.read())
            ok += r.status == 200
            jobs += sum(1 for j in d.get("jobs", []) if j.get("job_id"))
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(conc) as ex:
        res = list(ex.map(worker, conns))
    wall = (time.perf_counter() - t0) * 1e3
    print(f"{wall:.0f} {sum(r[0] for r in res)} {sum(r[1] for r in res)}")

def check_stop(bodyfile):
    """Checks a batch-stop answer: n entries, each with a job_id."""
    d = json.load(open(bodyfile))
    jobs = d.get("jobs", [])
    with_job = sum(1 for j in jobs if j.get("job_id"))
    print(f"{len(jobs)} {with_job}")

def _ticks(pid):
    w = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(w[1]), int(w[11]) + int(w[12])  # ppid, utime + stime (fields 4, 14, 15)

def stat_cpu(pid, tree=""):
    """utime+stime of pid in clock ticks; with "tree", plus its children's (nginx workers)."""
    pid = int(pid); total = _ticks(pid)[1]
    if tree:
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != pid:
                try:
                    ppid, t = _ticks(d)
                except OSError:
                    continue
                if ppid == pid: total += t
    print(total)

def table(path):
    r = {}
    for line in open(path):
        k, _, v = line.rstrip("\n").partition("=")
        r[k] = v
    f = lambda k: float(r[k]) if r.get(k, "") not in ("", "nan") else float("nan")
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    out = []
    p = out.append
    p(f"machine: {r['nproc']} cores, {r['cpu']}, kernel {r['kernel']}; load average at start {r['load_start']}, at end {r['load_end']}")
    p(f"wrk -t{r['threads']} -c{r['conns']} -d{r['duration']}s (after a {r['warmup']} s warm-up), "
      f"single-id stop, sim latency 0; gateway log level info, to a file")
    p("")
    p("| scenario | rps | p50 | p99 | gateway peak RSS | notes |")
    p("| --- | ---: | ---: | ---: | ---: | --- |")
    def row(name, key, rss_key=None, notes=""):
        rss = mib(f(rss_key)) if rss_key else "-"
        cpu = f"CPU/request: proxy {f(key+'_proxy_cpu_us'):.0f} us, sim {f(key+'_sim_cpu_us'):.0f} us"
        if key == "sim": cpu = f"CPU/request: sim {f(key+'_sim_cpu_us'):.0f} us"
        notes = cpu + ("; " + notes if notes else "")
        err = int(f(key + "_errors"))
        if err: notes += f"; {err} errors/non-2xx"
        p(f"| {name} | {f(key+'_rps'):,.0f} | {f(key+'_p50'):.2f} ms | {f(key+'_p99'):.2f} ms | {rss} | {notes} |")
    row("1 direct to sim", "sim")
    row("1 nginx -> sim", "nginx")
    row("1 haproxy HS256 JWT -> sim", "haproxy")
    row("1 gateway HS256 -> sim", "gw_hs", "rss_s1_peak", f"log {f('gw_hs_log_bytes'):.0f} bytes/request")
    row("2 gateway RS256 -> sim", "gw_rs", "rss_s2rs_peak")
    row("2 gateway ES256 -> sim", "gw_es", "rss_s2es_peak")
    p(f"| 3 fan-out 10,000 ids, sim 20 ms | - | {f('fan_median_ms'):.0f} ms (median of 3) | "
      f"{f('fan_best_ms'):.0f} ms (best of 3) | {mib(f('rss_s3_peak'))} | "
      f"walls {r['fan_walls']} ms; ideal 13 x 20 = 260 ms |")
    p(f"| 3 direct client, same 100 calls, 8 at once, sim 20 ms | - | {f('direct_median_ms'):.0f} ms (median of 3) | "
      f"{f('direct_best_ms'):.0f} ms (best of 3) | - | walls {r['direct_walls']} ms |")
    for n in ("100", "1000", "10000"):
        p(f"| 4 {int(n):,} ids, sim 0 ms, {r['s4_'+n+'_reqs']} sequential | {f('s4_'+n+'_rps'):,.1f} | "
          f"{f('s4_'+n+'_p50'):.2f} ms | {f('s4_'+n+'_p99'):.2f} ms | {mib(f('rss_s4_peak'))} | "
          f"gateway CPU {f('s4_'+n+'_cpu_us_per_id'):.2f} us/id, {f('s4_'+n+'_cpu_us_per_req'):,.0f} us/request; "
          f"sim CPU {f('s4_'+n+'_sim_cpu_us_per_id'):.2f} us/id |")
    p(f"| 6 1,000 concurrent first requests (cold gateway) | - | - | - | {mib(f('rss_s6_peak'))} | "
      f"statuses {r['s6_statuses']}, wall {r['s6_wall']} s, IAM calls {r['s6_iam']} |")
    p("")
    p(f"gateway RSS: idle after start {mib(f('rss_idle'))}; end of scenario 1 {mib(f('rss_s1_end'))}; "
      f"peak under load (scenarios 1-2) {mib(max(f('rss_s1_peak'), f('rss_s2rs_peak'), f('rss_s2es_peak')))}, "
      f"VmHWM {mib(f('hwm_s2_end'))}")
    p(f"scenario 3 on a fresh gateway: RSS before {mib(f('rss_s3_before'))}, sampled peak {mib(f('rss_s3_peak'))}, "
      f"VmHWM before {mib(f('hwm_s3_before'))} / after {mib(f('hwm_s3_after'))}")
    p("")
    targets = []
    def t(name, value, goal, ok):
        targets.append((name, value, goal, "PASS" if ok else "MISS"))
    hc = f("gw_hs_proxy_cpu_us") / f("haproxy_proxy_cpu_us")
    t("gateway / HAProxy CPU per request", f"{f('gw_hs_proxy_cpu_us'):.0f} / {f('haproxy_proxy_cpu_us'):.0f} us = {hc:.2f}x",
      "<= 2x", hc <= 2.0)
    hr = f("gw_hs_rps") / f("haproxy_rps")
    t("gateway / HAProxy rps", f"{hr:.2f}", ">= 0.5 (stretch 0.8)", hr >= 0.5)
    h99 = f("gw_hs_p99") - f("haproxy_p99")
    t("gateway p99 - HAProxy p99", f"{h99:+.2f} ms", "<= +2 ms", h99 <= 2.0)
    ratio = f("gw_hs_rps") / f("nginx_rps")
    t("gateway / nginx rps", f"{ratio:.2f}", ">= 0.80 (stretch 1.0)", ratio >= 0.8)
    d99 = f("gw_hs_p99") - f("nginx_p99")
    t("gateway p99 - nginx p99", f"{d99:+.2f} ms", "<= +1 ms", d99 <= 1.0)
    rs = f("gw_rs_rps") / f("gw_hs_rps"); es = f("gw_es_rps") / f("gw_hs_rps")
    t("RS256 / HS256 rps", f"{rs:.2f}", ">= 0.95", rs >= 0.95)
    t("ES256 / HS256 rps", f"{es:.2f}", ">= 0.95", es >= 0.95)
    fr = f("fan_best_ms") / 260.0; frm = f("fan_median_ms") / 260.0
    t("fan-out wall / ideal (260 ms)", f"{fr:.2f} best, {frm:.2f} median", "<= 1.10", fr <= 1.10)
    dr = f("fan_best_ms") / f("direct_best_ms"); drm = f("fan_median_ms") / f("direct_median_ms")
    t("fan-out wall / direct client wall (10,000 ids, sim 20 ms)", f"{dr:.2f} best, {drm:.2f} median", "<= 1.05", drm <= 1.05)
    c10 = f("s4_10000_cpu_us_per_id")
    t("gateway CPU per id, 10,000-id stop", f"{c10:.2f} us", "<= 1 us", c10 <= 1.0)
    cpu = [f(f"s4_{n}_cpu_us_per_id") for n in ("100", "1000", "10000")]
    growth = cpu[2] / cpu[1] if cpu[1] > 0 else float("inf")
    t("gateway CPU/id, 1,000 -> 10,000 ids", f"{cpu[1]:.2f} -> {cpu[2]:.2f} us ({growth:.2f}x)",
      "flat: <= 1.25x", growth <= 1.25)
    flat = max(cpu) / min(cpu) if min(cpu) > 0 else float("inf")
    t("gateway CPU/id, 100 : 1,000 : 10,000 ids", " : ".join(f"{c:.2f}" for c in cpu) + f" us (max/min {flat:.2f})",
      "flat: max/min <= 1.5", flat <= 1.5)
    t("idle RSS", mib(f("rss_idle")), "<= 16 MiB", f("rss_idle") <= 16 * 1024)
    load = max(f("rss_s1_peak"), f("rss_s2rs_peak"), f("rss_s2es_peak"), f("hwm_s2_end"))
    t("RSS under load (scenarios 1-2, VmHWM)", mib(load), "<= 64 MiB", load <= 64 * 1024)
    add = max(f("rss_s3_peak"), f("hwm_s3_after")) - f("rss_s3_before")
    t("10,000-id stop adds", mib(add), "<= 10 MiB", add <= 10 * 1024)
    iam = r["s6_iam"]
    t("IAM calls for 1,000 cold concurrent requests", iam, "== 1", iam == "1" and r.get("s6_all_ok") == "1")
    if "s7_store_rps" in r:
        ratio = f("s7_store_rps") / f("s7_mem_rps")
        p(f"shared store (scenario 7, same run): single-id stop {f('s7_mem_rps'):,.0f} rps without, "
          f"{f('s7_store_rps'):,.0f} rps with the store ({ratio:.2f}x); gateway CPU/request "
          f"{f('s7_mem_proxy_cpu_us'):.0f} -> {f('s7_store_proxy_cpu_us'):.0f} us; p99 "
          f"{f('s7_mem_p99')} -> {f('s7_store_p99')} ms; admin change seen by the other replica: "
          f"p50 {r['s7_propagation'].split(',')[0]} ms, max {r['s7_propagation'].split(',')[1]} ms")
        t("rps with the store / without (single-id stop)", f"{ratio:.2f}", ">= 0.90", ratio >= 0.90)
        added = f("s7_idem_p50") - f("s7_store_p50")
        p(f"with a fresh Idempotency-Key per request (store on): {f('s7_idem_rps'):,.0f} rps, p50 {f('s7_idem_p50')} ms, "
          f"p99 {f('s7_idem_p99')} ms, gateway CPU/request {f('s7_idem_proxy_cpu_us'):.0f} us")
        t("p50 added by an Idempotency-Key (store on)", f"{added:+.2f} ms", "<= +2 ms", added <= 2.0)
    cr = f("gw_hs_proxy_cpu_us") / f("nginx_proxy_cpu_us")
    p(f"CPU per proxied request (robust to other load on the machine): gateway {f('gw_hs_proxy_cpu_us'):.0f} us, "
      f"nginx {f('nginx_proxy_cpu_us'):.0f} us ({cr:.1f}x), HAProxy with JWT {f('haproxy_proxy_cpu_us'):.0f} us "
      f"({f('gw_hs_proxy_cpu_us') / f('haproxy_proxy_cpu_us'):.1f}x); sim {f('gw_hs_sim_cpu_us'):.0f} us. "
      f"Gateway CPU/request RS256 / HS256 {f('gw_rs_proxy_cpu_us') / f('gw_hs_proxy_cpu_us'):.2f}, "
      f"ES256 / HS256 {f('gw_es_proxy_cpu_us') / f('gw_hs_proxy_cpu_us'):.2f}")
    p("")
    p("| target | measured | goal | result |")
    p("| --- | --- | --- | --- |")
    for name, value, goal, res in targets:
        p(f"| {name} | {value} | {goal} | {res} |")
    p("")
    p(f"release build {r['build_s']} s; whole run {r['total_s']} s")
    print("\n".join(out))

if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"freeports": freeports, "mint": mint, "wrkparse": wrkparse, "rss": rss_sampler,
     "seq": seq, "burst": burst, "check_stop": check_stop, "cpu": stat_cpu,
     "direct_fanout": direct_fanout,
     "table": table}[cmd](*args)
PY
py() { python3 "$T/bench.py" "$@"; }

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
rss_start() { python3 "$T/bench.py" rss "$GW_PID" "$T/rss-$1" & RSS_SAMPLER=$!; PIDS+=("$RSS_SAMPLER"); }
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
for bad in "$RS_TOKEN" "${HS_TOKEN%?}x"; do  # another algorithm, a broken signature: refused
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$HAPROXY$STOP_PATH" \
        -H "Authorization: Bearer $bad" -H 'Content-Type: application/json' -d "$ONE_BODY")
    [ "$code" = 401 ] || die "haproxy answered $code to a token it must refuse"
done

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
run_wrk sim sim "$SIM$SIM_STOP_PATH"
run_wrk nginx sim "http://127.0.0.1:$NGINX_PORT$SIM_STOP_PATH" "$NGINX_PID" tree
run_wrk haproxy gw_hs "$HAPROXY$STOP_PATH" "$HAPROXY_PID"
rss_start s1
log0=$(stat -c %s "$T/gateway-$GW_RUN.log")
run_wrk gw_hs gw_hs "$GW$STOP_PATH" "$GW_PID"
log1=$(stat -c %s "$T/gateway-$GW_RUN.log")
rss_stop s1
put gw_hs_log_bytes "$(python3 -c "
n = $(py wrkparse "$T/wrk-gw_hs.txt" | cut -d' ' -f4)
print(($log1 - $log0) / max(n, 1))")"
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

# ---------------------------------------------------------------------------
# 7. The shared store: single-id stop rps and CPU with and without it, in the
# same run; propagation of an admin change between two replicas
# ---------------------------------------------------------------------------
if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432 \
    && command -v psql >/dev/null 2>&1; then
    log "scenario 7: the shared store (PostgreSQL at 127.0.0.1:5432)"
    BENCH_DB="cphgw_bench_$$"
    psql -h 127.0.0.1 -U postgres -qAtc "CREATE DATABASE $BENCH_DB" >/dev/null
    drop_bench_db() { psql -h 127.0.0.1 -U postgres -qAtc "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" >/dev/null 2>&1 || true; }
    export BENCH_STORE_URL="postgres://postgres@127.0.0.1:5432/$BENCH_DB"
    read -r ST1_PORT ST1_ADMIN ST2_PORT ST2_ADMIN <<<"$(py freeports 4)"
    for i in 1 2; do
        port_var="ST${i}_PORT"; admin_var="ST${i}_ADMIN"
        sed -e "s/^listen = .*/listen = \"127.0.0.1:${!port_var}\"/" \
            -e "s/^admin_listen = .*/admin_listen = \"127.0.0.1:${!admin_var}\"/" \
            "$T/gateway.toml" >"$T/gateway-store-$i.toml"
        printf '\n[store]\nurl_env = "BENCH_STORE_URL"\n' >>"$T/gateway-store-$i.toml"
        # The propagation check uses an HS256 admin token.
        sed -i 's/^\[auth\]$/[auth]\nallow_hs256_admin = true/' "$T/gateway-store-$i.toml"
    done
    "$BIN" tenants import --config "$T/gateway-store-1.toml" >/dev/null || die "tenants import failed"
    # The same gateway without and with the store, back to back.
    run_wrk s7_mem gw_hs "$GW$STOP_PATH" "$GW_PID"
    "$BIN" serve --config "$T/gateway-store-1.toml" 2>"$T/gateway-store-1.log" &
    ST1_PID=$!; PIDS+=("$ST1_PID")
    "$BIN" serve --config "$T/gateway-store-2.toml" 2>"$T/gateway-store-2.log" &
    ST2_PID=$!; PIDS+=("$ST2_PID")
    wait_http "http://127.0.0.1:$ST1_ADMIN/readyz"
    wait_http "http://127.0.0.1:$ST2_ADMIN/readyz"
    run_wrk s7_store gw_hs "http://127.0.0.1:$ST1_PORT$STOP_PATH" "$ST1_PID"
    # The same with a fresh Idempotency-Key on every request (a stop record each).
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
    run_wrk s7_idem gw_idem "http://127.0.0.1:$ST1_PORT$STOP_PATH" "$ST1_PID"
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
