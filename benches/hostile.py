#!/usr/bin/env python3
"""Hostile-client and hostile-upstream attacks on a cph-gateway binary, with numbers.

    python3 benches/hostile.py GATEWAY_BIN [SIM_BIN]

Starts the simulator (`SIM_BIN sim`, default GATEWAY_BIN) and, for each
attack, a fresh gateway (`GATEWAY_BIN serve`) on loopback ports; runs the
attack; prints one line per attack with the gateway's RSS and open fds and
the latency of a well-behaved request during or after it. Run it against an
older binary and a newer one to compare (benches/hostile.sh does both).
Only the standard library; every process it starts is stopped at the end.
"""
import json, os, signal, socket, subprocess, sys, tempfile, threading, time
import urllib.request, urllib.error

GW = os.path.abspath(sys.argv[1])
SIM = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else GW
ONLY = set(os.environ.get("ATTACKS", "").split(",")) - {""}
TMP = tempfile.mkdtemp(prefix="cphgw-hostile.")
PROJECT_A = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
PROJECT_B = "0b1b2c3d4e5f60718293a4b5c6d7e8f9"
SECRET = "bench-secret-0123456789abcdef0123456789"
PROCS = []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def phone(project, i):
    return f"{project[:8]}{i:024x}"


def http(method, url, body=None, token=None, timeout=10, headers=None):
    """(status, body bytes, seconds); status 0 on a transport error."""
    h = dict(headers or {})
    if token:
        h["authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h["content-type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, e.read(), time.monotonic() - t
    except Exception:
        return 0, b"", time.monotonic() - t


def proc_stat(pid, field="VmRSS:"):
    """(MiB of `field`, open fds); VmHWM is the peak RSS of the process."""
    try:
        rss = next(l for l in open(f"/proc/{pid}/status") if l.startswith(field))
        rss = int(rss.split()[1]) // 1024
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except Exception:
        return -1, -1


class Gateway:
    def __init__(self, sim_url, env=None, fd_limit=None, tenants=None):
        self.dir = tempfile.mkdtemp(dir=TMP)
        self.tenants = os.path.join(self.dir, "tenants.toml")
        with open(self.tenants, "w") as f:
            f.write(tenants or default_tenants())
        cfg = os.path.join(self.dir, "gateway.toml")
        self.port, self.admin_port = free_port(), free_port()
        with open(cfg, "w") as f:
            f.write(f"""[server]
listen = "127.0.0.1:{self.port}"
admin_listen = "127.0.0.1:{self.admin_port}"
shutdown_grace_ms = 10000
[auth]
issuer = "https://idp.bench.local"
audience = "cph-gateway"
hs256_secret_env = "BENCH_JWT_SECRET"
[iam]
endpoint = "{sim_url}"
[iam.credentials.default]
domain = "sim-domain"
user = "sim-user"
password_env = "BENCH_IAM_PASSWORD"
[upstream]
cph_endpoint = "{sim_url}"
[tenants]
file = "{self.tenants}"
watch_interval_ms = 200
""")
        e0 = {"BENCH_JWT_SECRET": SECRET, "BENCH_IAM_PASSWORD": "sim-password"}
        # Newer binaries refuse HS256 admin tokens unless allowed; older ones
        # do not know the key.
        text = open(cfg).read()
        with open(cfg, "w") as f:
            f.write(text.replace("[auth]\n", "[auth]\nallow_hs256_admin = true\n"))
        if subprocess.run([GW, "check-config", "--config", cfg], env=e0,
                          capture_output=True).returncode != 0:
            with open(cfg, "w") as f:
                f.write(text)
        e = {"BENCH_JWT_SECRET": SECRET, "BENCH_IAM_PASSWORD": "sim-password",
             "RUST_LOG": "info", "PATH": os.environ.get("PATH", "")}
        e.update(env or {})
        cmd = [GW, "serve", "--config", cfg]
        if fd_limit:
            cmd = ["/bin/sh", "-c", f'ulimit -n {fd_limit} && exec "$0" "$@"'] + cmd
        self.log = os.path.join(self.dir, "gateway.log")
        self.proc = subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "w"))
        PROCS.append(self.proc)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.token_a = self.token("acme", cfg, e)
        self.token_b = self.token("globex", cfg, e)
        for _ in range(100):
            if http("GET", self.admin + "/readyz", timeout=1)[0] == 200:
                break
            time.sleep(0.1)

    def token(self, tenant, cfg, env, admin=False):
        args = [GW, "token", "--tenant", tenant, "--config", cfg] + (["--admin"] if admin else [])
        return subprocess.run(args, env=env, capture_output=True, text=True).stdout.strip()

    def stat(self):
        return proc_stat(self.proc.pid)

    def stop(self, ids, token=None, timeout=10):
        return http("POST", self.url + "/v1/cloud-phone/phones/batch-stop",
                    {"phone_ids": ids}, token or self.token_a, timeout)

    def good_latency(self):
        """(healthz s, stop s), None where there was no 200 within 5 s."""
        h = http("GET", self.admin + "/healthz", timeout=5)
        s = self.stop([phone(PROJECT_B, 1)], self.token_b, 5)
        return (round(h[2], 3) if h[0] == 200 else None, round(s[2], 3) if s[0] == 200 else None)

    def logs(self):
        return open(self.log, errors="replace").read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def default_tenants():
    out = ""
    for t, p in (("acme", PROJECT_A), ("globex", PROJECT_B)):
        out += (f'[tenants.{t}]\ndefault_project = "{p}"\n[[tenants.{t}.projects]]\n'
                f'project_id = "{p}"\nregion = "cn-east-3"\ncredential = "default"\n\n')
    return out


def faults(sim_url, **f):
    http("PUT", sim_url + "/sim/v1/faults", f)


def sim_stats(sim_url):
    return json.loads(http("GET", sim_url + "/sim/v1/stats")[1] or b"{}")


def report(name, gw, extra=""):
    rss, fds = gw.stat()
    peak = proc_stat(gw.proc.pid, "VmHWM:")[0]
    h, s = gw.good_latency()
    print(f"{name:30} RSS {rss:5} MiB (peak {peak:5})  fds {fds:5}  healthz {h}s  stop {s}s  {extra}",
          flush=True)


def attack(name):
    return not ONLY or name in ONLY


def main():
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = subprocess.Popen([SIM, "sim", "--listen", f"127.0.0.1:{sim_port}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(sim)
    time.sleep(0.5)
    print(f"binary: {GW}")

    if attack("connections"):
        faults(sim_url)
        gw = Gateway(sim_url, fd_limit=1024)
        report("idle gateway", gw)
        socks = []
        for i in range(8000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", gw.port if i % 8 else gw.admin_port))
            socks.append(s)
        time.sleep(3)
        connected = 0
        for i, s in enumerate(socks):
            try:
                s.getpeername()
                connected += 1
                if i % 3 == 0:
                    s.send(b"POST /v1/cloud-phone/phones/batch-stop HTTP/1.1\r\nhost: x\r\nx-pad: " + b"p" * 2000)
            except OSError:
                pass
        report("8000 idle/half-open conns", gw, f"({connected} connected)")
        time.sleep(15)
        open_now = 0
        for s in socks:
            s.setblocking(False)
            try:
                open_now += s.recv(1) != b""
            except BlockingIOError:
                open_now += 1
            except OSError:
                pass
        report("  15 s later", gw, f"({open_now} still open)")
        for s in socks:
            s.close()
        gw.close()

    if attack("burst"):
        # 4,000 connections opened at once, nothing sent, counted as the
        # client sees them 2 s later: closed (the gateway evicted them),
        # open, or still connecting. A connection the kernel completed with
        # a SYN cookie but never queued counts as open here and is not in
        # the gateway's fds.
        faults(sim_url)
        gw = Gateway(sim_url, fd_limit=1024)
        socks = []
        t0 = time.monotonic()
        for i in range(4000):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", gw.port))
            socks.append(s)
        time.sleep(max(0.0, 2.0 - (time.monotonic() - t0)))
        seen = {"closed": 0, "open": 0, "connecting": 0}
        for s in socks:
            try:
                s.getpeername()
            except OSError:
                seen["connecting"] += 1
                continue
            try:
                seen["closed" if s.recv(1) == b"" else "open"] += 1
            except BlockingIOError:
                seen["open"] += 1
            except OSError:
                seen["closed"] += 1
        report("4000 conns at once, 2 s later", gw,
               f"(closed {seen['closed']}, open {seen['open']}, connecting {seen['connecting']})")
        for s in socks:
            s.close()
        gw.close()

    if attack("oversize"):
        for what, f in (("CPH 200 of 200 MB", {"oversize_body_bytes": 200_000_000}),):
            faults(sim_url, **f)
            gw = Gateway(sim_url)
            st, body, t = gw.stop([phone(PROJECT_A, i) for i in range(100)], timeout=60)
            report(what, gw, f"(stop: {st} in {t:.2f}s)")
            gw.close()
        faults(sim_url)
        gw = Gateway(sim_url)
        st, body, _ = gw.stop([phone(PROJECT_A, 5000)])
        job = json.loads(body)["jobs"][0].get("job_id", "x")
        faults(sim_url, oversize_body_bytes=200_000_000)
        st, body, t = http("GET", f"{gw.url}/v1/cloud-phone/jobs/{job}", token=gw.token_a, timeout=60)
        report("job query of 200 MB", gw, f"(answer: {st}, {len(body)} bytes relayed in {t:.2f}s)")
        gw.close()
        faults(sim_url, oversize_iam_bytes=200_000_000)
        gw = Gateway(sim_url)
        st, _, t = gw.stop([phone(PROJECT_A, 6000)], timeout=60)
        faults(sim_url)
        report("IAM answer of 200 MB", gw, f"(stop: {st} in {t:.2f}s)")
        gw.close()
        faults(sim_url, reject_all_400=True, oversize_error_msg_bytes=200_000)
        gw = Gateway(sim_url)
        st, body, t = gw.stop([phone(PROJECT_A, i) for i in range(10_000)], timeout=60)
        faults(sim_url)
        report("200 KB error_msg x 100 batches", gw, f"(stop: {st}, answer {len(body)} bytes)")
        gw.close()

    if attack("heavy"):
        faults(sim_url, latency_ms=200)
        gw = Gateway(sim_url, env={"RUST_LOG": "warn"})
        body = json.dumps({"phone_ids": [phone(PROJECT_A, i) for i in range(10_000)]}).encode()
        counts, peak, lat_b = {}, [0], []
        lock = threading.Lock()

        def heavy():
            st = http("POST", gw.url + "/v1/cloud-phone/phones/batch-stop", body, gw.token_a, 60)[0]
            with lock:
                counts[st] = counts.get(st, 0) + 1

        def light():
            lat_b.append(gw.stop([phone(PROJECT_B, 2)], gw.token_b, 30)[2])

        threads = []
        start = time.monotonic()
        for i in range(400):
            time.sleep(max(0, start + i * 0.02 - time.monotonic()))
            t = threading.Thread(target=heavy)
            t.start()
            threads.append(t)
            if i % 20 == 0:
                t = threading.Thread(target=light)
                t.start()
                threads.append(t)
            peak[0] = max(peak[0], gw.stat()[0])
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], gw.stat()[0])
            time.sleep(0.2)
        lat_b.sort()
        report("50 stops/s x 10k ids, 8 s", gw,
               f"(peak RSS {peak[0]} MiB; answers {counts}; other tenant median "
               f"{lat_b[len(lat_b) // 2]:.2f}s)")
        gw.close()
        faults(sim_url)

    if attack("jobs"):
        faults(sim_url, latency_ms=200)
        gw = Gateway(sim_url)
        http("POST", sim_url + "/sim/v1/stats/reset")
        peak = [0]
        ts = [threading.Thread(target=lambda: http("GET", gw.url + "/v1/cloud-phone/jobs/abc",
                                                   token=gw.token_a, timeout=30)) for _ in range(600)]
        for t in ts:
            t.start()
        while any(t.is_alive() for t in ts):
            peak[0] = max(peak[0], gw.stat()[1])
            time.sleep(0.05)
        s = sim_stats(sim_url)
        report("600 concurrent job queries", gw,
               f"(peak fds {peak[0]}; {s.get('job_queries')} reached CPH, "
               f"at most {s.get('max_job_queries_in_flight', '?')} at once)")
        gw.close()
        faults(sim_url)

    if attack("disconnect"):
        faults(sim_url, latency_ms=300)
        gw = Gateway(sim_url)
        http("POST", sim_url + "/sim/v1/stats/reset")
        ids = [phone(PROJECT_A, 8000 + i) for i in range(4000)]
        http("POST", gw.url + "/v1/cloud-phone/phones/batch-stop", {"phone_ids": ids}, gw.token_a,
             timeout=0.3, headers={"x-request-id": "gone-caller-1"})
        time.sleep(20)
        s = sim_stats(sim_url)
        logged = sum("gone-caller-1" in l and "status=" in l for l in gw.logs().splitlines())
        metric = [l for l in http("GET", gw.admin + "/metrics")[1].decode().splitlines()
                  if l.startswith("cphgw_phones_total")]
        report("caller gone mid-stop", gw,
               f"({s.get('stopped_phones')} phones stopped; {logged} log lines; metrics {metric})")
        gw.close()
        faults(sim_url)

    if attack("tenants"):
        gw = Gateway(sim_url)
        os.remove(gw.tenants)
        os.mkfifo(gw.tenants)
        time.sleep(1)
        st, _, t = http("POST", gw.admin + "/admin/v1/reload", token=gw.token("x", os.path.join(gw.dir, "gateway.toml"),
                        {"BENCH_JWT_SECRET": SECRET, "BENCH_IAM_PASSWORD": "x"}, admin=True), timeout=5)
        gw.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            gw.proc.wait(timeout=15)
            exited = f"{time.monotonic() - t0:.2f}s"
        except subprocess.TimeoutExpired:
            exited = "no exit in 15 s"
        print(f"{'tenants file is a FIFO':30} reload: {st or 'hung'} in {t:.2f}s; SIGTERM: {exited}", flush=True)
        gw.close()

    if attack("logs"):
        gw = Gateway(sim_url)
        cfg = os.path.join(gw.dir, "gateway.toml")
        # A token whose sub holds a newline, minted by hand (HS256).
        import base64, hashlib, hmac
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        now = int(time.time())
        claims = {"iss": "https://idp.bench.local", "aud": "cph-gateway", "exp": now + 600, "iat": now,
                  "nbf": now, "tenant": "acme", "sub": "svc\n2026-01-01T00:00:00Z  INFO forged: all good"}
        def mint(c):
            head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(c).encode())
            return head + "." + b64(hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest())
        gw.stop([phone(PROJECT_A, 9999)], mint(claims))
        admin = dict(claims, roles=["cph-gateway-admin"])
        del admin["tenant"]
        body = {"default_project": PROJECT_A, "projects": [
            {"project_id": PROJECT_A, "region": "cn-east-3", "credential": "default"}]}
        http("PUT", gw.admin + "/admin/v1/tenants/initech", body, mint(admin))
        time.sleep(0.5)
        forged = sum(l.startswith("2026-01-01T00:00:00Z  INFO forged") for l in gw.logs().splitlines())
        print(f"{'JWT sub with a newline':30} forged log lines: {forged}", flush=True)
        gw.close()

    if attack("sigterm"):
        gw = Gateway(sim_url)
        s = socket.create_connection(("127.0.0.1", gw.admin_port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        s.recv(1024)
        s2 = socket.create_connection(("127.0.0.1", gw.port))
        s3 = socket.create_connection(("127.0.0.1", gw.port))
        s3.sendall(b"GET /healthz HTTP/1.1\r\nho")
        time.sleep(0.2)
        gw.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        gw.proc.wait(timeout=30)
        print(f"{'SIGTERM, idle/half-open conns':30} exited after {time.monotonic() - t0:.2f}s (grace 10 s)", flush=True)
        for c in (s, s2, s3):
            c.close()


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.kill()
                p.wait()
