#!/usr/bin/env python3
"""Latency an Idempotency-Key adds to a stop, without and with the shared store.

    python3 benches/idempotency.py [BIN] [N]

Starts the simulator and a gateway (release binary BIN, default
target/release/cph-gateway) on loopback, first alone (memory), then on a
fresh PostgreSQL database at 127.0.0.1:5432 (created and dropped here), and
sends N (default 400) single-id stops one after another on a kept-alive
connection, half without a key and half with a new key each; prints p50 and
p99 of each and the p50 a key adds. Stops sent alternately, so that drift
in the machine's load falls on both alike.
"""
import http.client, json, os, secrets, signal, socket, statistics, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/cph-gateway"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 400
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def wait(url_port, path):
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", url_port, timeout=1); c.request("GET", path)
            if c.getresponse().status == 200: return
        except OSError: pass
        time.sleep(0.05)
    raise SystemExit(f"nothing answers on {url_port}{path}")

def run(store_url):
    d = tempfile.mkdtemp()
    sim_port, gw, admin = port(), port(), port()
    procs = [subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{sim_port}"], stderr=subprocess.DEVNULL)]
    wait(sim_port, "/sim/v1/stats")
    open(f"{d}/tenants.toml", "w").write(f'[tenants.acme]\ndefault_project = "{PROJECT}"\n\n[[tenants.acme.projects]]\nproject_id = "{PROJECT}"\nregion = "cn-east-3"\ncredential = "default"\n')
    store = '\n[store]\nurl_env = "BENCH_STORE_URL"\n' if store_url else ""
    open(f"{d}/gateway.toml", "w").write(f'''[server]
listen = "127.0.0.1:{gw}"
admin_listen = "127.0.0.1:{admin}"
[auth]
issuer = "https://idp.bench"
hs256_secret_env = "BENCH_JWT_SECRET"
allow_hs256_admin = true
[iam]
endpoint = "http://127.0.0.1:{sim_port}"
[iam.credentials.default]
domain = "sim-domain"
user = "sim-user"
password_env = "BENCH_IAM_PASSWORD"
[upstream]
cph_endpoint = "http://127.0.0.1:{sim_port}"
[limits]
tenant_rate_per_s = 1000000
[tenants]
file = "{d}/tenants.toml"
{store}''')
    env = {"PATH": os.environ.get("PATH", ""), "BENCH_JWT_SECRET": secrets.token_hex(32),
           "BENCH_IAM_PASSWORD": "sim-password", "BENCH_STORE_URL": store_url or "", "RUST_LOG": "warn"}
    if store_url:
        subprocess.run([BIN, "tenants", "import", "--config", f"{d}/gateway.toml"], env=env, check=True, capture_output=True)
    procs.append(subprocess.Popen([BIN, "serve", "--config", f"{d}/gateway.toml"], env=env, stderr=subprocess.DEVNULL))
    try:
        wait(admin, "/readyz")
        token = subprocess.run([BIN, "token", "--tenant", "acme", "--config", f"{d}/gateway.toml"], env=env,
                               check=True, capture_output=True, text=True).stdout.strip()
        c = http.client.HTTPConnection("127.0.0.1", gw)
        sim = http.client.HTTPConnection("127.0.0.1", sim_port)
        times = {False: [], True: []}
        for i in range(N + 40):
            if i % 100 == 0:
                sim.request("POST", "/sim/v1/phones/start"); sim.getresponse().read()
            keyed = i % 2 == 1
            h = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            if keyed: h["Idempotency-Key"] = f"bench-{i}-{secrets.token_hex(4)}"
            body = json.dumps({"phone_ids": [PROJECT[:8] + format(i % 20000, "024x")]})
            t0 = time.perf_counter(); c.request("POST", "/v1/cloud-phone/phones/batch-stop", body, h)
            r = c.getresponse(); r.read(); dt = (time.perf_counter() - t0) * 1000
            if r.status != 200: raise SystemExit(f"stop answered {r.status}")
            if i >= 40: times[keyed].append(dt)
        return times
    finally:
        for p in procs: p.send_signal(signal.SIGTERM); p.wait()

def q(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]

rows = [("memory (no store)", run(None))]
db = f"cphgw_idem_{secrets.token_hex(4)}"
if subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"], capture_output=True).returncode == 0:
    try:
        rows.append(("PostgreSQL store", run(f"postgres://postgres@127.0.0.1:5432/{db}")))
    finally:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE {db} WITH (FORCE)"], capture_output=True)
print(f"single-id stop latency, {N // 2} stops each way, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
print("| mode | p50 without key | p50 with key | added p50 | p99 without | p99 with |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name, t in rows:
    a, b = q(t[False], .5), q(t[True], .5)
    print(f"| {name} | {a:.2f} ms | {b:.2f} ms | {b - a:+.2f} ms | {q(t[False], .99):.2f} ms | {q(t[True], .99):.2f} ms |")
