#!/usr/bin/env python3
"""Helpers of benches/run.sh: ports, JWTs, wrk parsing, RSS sampler, clients
(sequential, burst, the direct fan-out baseline), /proc CPU readings, and the
result table with its ratios and targets. Run as: bench.py COMMAND ARGS..."""
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
        # os._exit, not sys.exit: a SystemExit raised while the loop's /proc
        # file is being closed is swallowed ("Exception ignored") and the
        # sampler would run on while run.sh waits for it.
        os._exit(0)
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

def seq(port, path, token, bodyfile, n, start_port=""):
    """n sequential keep-alive requests; prints: ok_count p50_ms p99_ms wall_s.
    With start_port, the simulator there starts its stopped phones before each
    request (untimed), so that every phone is running when it is stopped."""
    body = open(bodyfile, "rb").read()
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    sim = http.client.HTTPConnection("127.0.0.1", int(start_port), timeout=60) if start_port else None
    times, ok, pause = [], 0, 0.0
    t0 = time.perf_counter()
    for _ in range(int(n)):
        if sim:
            p0 = time.perf_counter()
            sim.request("POST", "/sim/v1/phones/start"); r = sim.getresponse(); r.read()
            if r.status >= 300: sys.exit(f"starting the phones: {r.status}")
            pause += time.perf_counter() - p0
        s = time.perf_counter()
        st, _ = post(conn, path, token, body)
        times.append((time.perf_counter() - s) * 1e3)
        ok += st == 200
    wall = time.perf_counter() - t0 - pause
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
    if r.get("rounds"):
        p(f"scenario 1: the gateway first brought to its steady state (stop records at their bound), then the four peers "
          f"in turns, {r['rounds']} rounds; each figure the median of its rounds "
          f"(rps per round: sim {r['sim_rounds_rps']}, nginx {r['nginx_rounds_rps']}, HAProxy {r['haproxy_rounds_rps']}, "
          f"gateway {r['gw_hs_rounds_rps']}; CPU us/request per round: HAProxy {r['haproxy_rounds_cpu']}, gateway {r['gw_hs_rounds_cpu']})")
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
    p(f"| 4 10,000 ids, running phones (started before each), {r['s4f_reqs']} sequential | {f('s4f_rps'):,.1f} | "
      f"{f('s4f_p50'):.2f} ms | {f('s4f_p99'):.2f} ms | {mib(f('rss_s4_peak'))} | "
      f"gateway CPU {f('s4f_cpu_us_per_id'):.2f} us/id, {f('s4f_cpu_us_per_req'):,.0f} us/request; "
      f"sim CPU (with starting the phones) {f('s4f_sim_cpu_us_per_id'):.2f} us/id |")
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
    t("gateway CPU per id, 10,000-id stop (phones already stopped: CPH refuses each)", f"{c10:.2f} us", "<= 1 us", c10 <= 1.0)
    c10f = f("s4f_cpu_us_per_id")
    t("gateway CPU per id, 10,000-id stop (running phones: a job each)", f"{c10f:.2f} us", "<= 1 us", c10f <= 1.0)
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
        if "s7_mem_rounds_rps" in r:
            p(f"scenario 7 in turns, medians of {len(r['s7_mem_rounds_rps'].split(','))} rounds (rps per round: "
              f"memory {r['s7_mem_rounds_rps']}, store {r['s7_store_rounds_rps']}, store with keys "
              f"{r['s7_idem_rounds_rps']}; p50 ms per round: store {r['s7_store_rounds_p50']}, "
              f"store with keys {r['s7_idem_rounds_p50']}" + (f", with keys over TLS {r['s7_idemtls_rounds_p50']}"
              if "s7_idemtls_rounds_p50" in r else "") + ")")
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
        if "s7_idemtls_p50" in r:
            p(f"the same over TLS to the database (its URL's default, sslmode=prefer; another replica on the same "
              f"database, in the same rounds): {f('s7_idemtls_rps'):,.0f} rps, p50 {f('s7_idemtls_p50')} ms "
              f"({f('s7_idemtls_p50') - f('s7_store_p50'):+.2f} ms over the store without keys), gateway CPU/request "
              f"{f('s7_idemtls_proxy_cpu_us'):.0f} us")
        if "s7_floor_record_us" in r:
            # With every core busy, a closed loop of C connections waits about
            # C x (CPU per request) / cores: PostgreSQL's own CPU on the same
            # cores bounds both store targets, whatever the gateway does.
            rec, keyed = f("s7_floor_record_us"), f("s7_floor_keyed_us")
            base = f("s7_mem_proxy_cpu_us") + f("s7_mem_sim_cpu_us")
            cores = f("nproc")
            p(f"PostgreSQL alone (pgbench, the gateway's statements, no gateway): {rec:.1f} us of CPU per stop "
              f"record, {keyed:.1f} us per keyed stop. On these shared cores, with a gateway that spent nothing "
              f"on the store: store / no store at most {base / (base + rec):.2f} (gateway + sim {base:.0f} us per "
              f"request in memory mode), and a key adds at least {int(r['conns']) * (keyed - rec) / cores / 1000:+.2f} ms "
              f"at p50 ({int(r['conns'])} connections x {keyed - rec:.0f} us / {cores:.0f} cores)")
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
