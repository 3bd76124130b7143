"""Load benchmark: our provider beside panva's oidc-provider (the certified peer), one run.

    . .venv/bin/activate && python bench/run.py            # or: make bench
    python bench/run.py --duration 5 --concurrency 16 --only login,token
    python bench/run.py --skip-peer --workers 3 --threads 4
    python bench/run.py --servers granian,gthread           # two serving models of ours, one run

It starts the providers on loopback ports and drives them in turn, workload by workload:

- ours: ``idp serve`` (granian) with production settings against a fresh PostgreSQL database
  and Redis under a unique key prefix, ``[limits] enabled = false``, the file SMS backend, new
  signing keys, one bench client and N citizens registered through the ``idp`` command; with
  ``--servers`` also (or instead) the same app and settings under gunicorn's gthread or sync
  workers (bench/gunicorn_serve.py), each with a database of its own;
- the peer: ``shared/peers/oidc-provider`` copied to a cache directory, ``npm ci`` there once,
  ``NODE_ENV=production node server.mjs``.

Workloads: full login flows (bench/flow.mjs), code exchange (codes collected first within SSO
sessions, then each redeemed once, bench/flow.mjs), refresh (wrk, rotating), userinfo,
introspection, discovery and JWKS (wrk). For each it prints throughput, p50, p99 and errors of
each provider, the ratios (each of ours to the peer; the first serving model to the others), and
the CPU each server used per operation.
Every loop is bounded in time and count; nothing is sent anywhere but 127.0.0.1.
"""
from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_SRC = Path(os.environ.get("BENCH_PEER_DIR", REPO.parent / "shared" / "peers" / "oidc-provider"))
if not PEER_SRC.exists():
    PEER_SRC = Path("/work/shared/peers/oidc-provider")
PG_ADMIN = os.environ.get("IDP_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("IDP_TEST_REDIS", "redis://127.0.0.1:6379/0")
REDIRECT = "http://127.0.0.1:9999/cb"
WORKLOADS = ["login", "token", "refresh", "userinfo", "introspect", "discovery", "jwks"]
LABELS = {"login": "full login flows", "token": "token: code exchange", "refresh": "token: refresh",
          "userinfo": "userinfo", "introspect": "introspection", "discovery": "discovery", "jwks": "JWKS"}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url: str, proc: subprocess.Popen, seconds: float, logfile: Path) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"bench: server exited ({proc.returncode}); see {logfile}:\n{logfile.read_text()[-2000:]}")
        try:
            if http_get(url, 1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench: {url} did not answer within {seconds:.0f} s; see {logfile}")


# ---- CPU and memory from /proc ---------------------------------------------------------------

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo and len(pids) < 1000:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def pids_named(*names: str) -> list[int]:
    """Processes by command name (PostgreSQL and Redis, which our provider's CPU includes)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in names:
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def pg_backends(db_name: str) -> list[int]:
    """PostgreSQL backends connected to one database (their title names it)."""
    out = []
    for pid in pids_named("postgres"):
        try:
            if f" {db_name} ".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            pass
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    get = lambda k: int(re.search(rf"^{k}:\s+(\d+) kB", text, re.M).group(1)) / 1024  # noqa: E731
    return get("VmRSS"), get("VmHWM")


class CpuMeter:
    """CPU seconds used by groups of processes over one workload (cores = seconds per second)."""

    def __init__(self, groups_fn):
        self.groups_fn = groups_fn

    def __enter__(self):
        self.t0 = time.monotonic()
        self.c0 = {p: proc_cpu(p) for pids in self.groups_fn().values() for p in pids}
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        self.split = {g: sum(max(0.0, proc_cpu(p) - self.c0.get(p, 0.0)) for p in pids) / wall
                      for g, pids in self.groups_fn().items()}
        self.cores = sum(self.split.values())


# ---- generators (their CPU from wait4) --------------------------------------------------------

def run_generator(cmd: list[str], env: dict | None, pin: str | None, limit_s: float, out: Path) -> tuple[int, float]:
    """Run a load generator to its end (bounded); returns (exit code, its CPU seconds)."""
    if pin:
        cmd = ["taskset", "-c", pin] + cmd
    with open(out, "wb") as fh:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
        end = time.monotonic() + limit_s
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode, ru.ru_utime + ru.ru_stime
            if time.monotonic() > end:
                proc.kill()
                _, status, ru = os.wait4(proc.pid, 0)
                proc.returncode = -9
                return -9, ru.ru_utime + ru.ru_stime
            time.sleep(0.05)


def wrk(url: str, args, tmp: Path, name: str, env: dict) -> dict:
    assert url.startswith("http://127.0.0.1:"), url
    out = tmp / f"wrk-{name}.json"
    script = env.pop("script", "request.lua")
    env = {"BENCH_OUT": str(out), "BENCH_LUA_DIR": str(HERE / "wrk"), "BENCH_THREADS": str(min(args.wrk_threads, args.concurrency)), **env}
    cmd = ["wrk", "-t", str(min(args.wrk_threads, args.concurrency)), "-c", str(args.concurrency), "-d", f"{args.duration}s",
           "--timeout", "10s", "-s", str(HERE / "wrk" / script), url]
    rc, cpu = run_generator(cmd, env, args.gen_cpu, args.duration + 30, tmp / f"wrk-{name}.log")
    if rc != 0 or not out.exists():
        raise SystemExit(f"bench: wrk failed for {name}: {(tmp / f'wrk-{name}.log').read_text()[-1500:]}")
    r = json.loads(out.read_text())
    secs = r["duration_us"] / 1e6
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    ok = r["requests"] - r["status"]
    return {"throughput": ok / secs, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "errors": errors,
            "requests": r["requests"], "seconds": secs, "generator_cpu_s": cpu, "generator": "wrk"}


def flow(mode: str, target: str, prov: "Provider", args, tmp: Path, **extra) -> dict:
    out = tmp / f"flow-{mode}-{target}.log"
    kind = "ours" if isinstance(prov, Ours) else "peer"  # what flow.mjs drives: our login pages or the peer's
    cmd = ["node", str(HERE / "flow.mjs"), mode, "--target", kind, "--base", prov.url,
           "--client-id", prov.client_id, "--secret", prov.secret, "--redirect", REDIRECT,
           "--concurrency", str(args.concurrency), "--citizens", str(prov.citizens_csv)]
    if prov.outbox:
        cmd += ["--outbox", str(prov.outbox)]
    for k, v in extra.items():
        cmd += [f"--{k}", str(v)]
    rc, cpu = run_generator(cmd, None, args.gen_cpu, float(extra.get("duration", args.duration)) + 60, out)
    lines = out.read_text().strip().splitlines()
    if rc != 0 or not lines or not lines[-1].startswith("{"):
        raise SystemExit(f"bench: flow.mjs {mode} failed on {target}:\n{out.read_text()[-2000:]}")
    r = json.loads(lines[-1])
    r["generator_cpu_s"] = cpu
    r["generator"] = "node"
    return r


# ---- the two providers -------------------------------------------------------------------------

class Provider:
    name: str
    url: str
    client_id: str
    secret: str
    outbox: Path | None = None
    citizens_csv: Path
    proc: subprocess.Popen | None = None
    endpoints: dict

    def server_pids(self) -> list[int]:
        return tree(self.proc.pid) if self.proc else []

    def cpu_groups(self) -> dict[str, list[int]]:
        return {"server": self.server_pids()}

    def discover(self) -> None:
        self.endpoints = json.loads(http_get(f"{self.url}/.well-known/openid-configuration")[1])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                for p in reversed(self.server_pids()):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait(5)


#: Serving models of ours (--servers): the command that serves the app, after the settings file.
SERVERS = {"granian": [sys.executable, "-m", "idp.cli", "serve"],
           "gthread": [sys.executable, str(HERE / "gunicorn_serve.py"), "gthread"],
           "sync": [sys.executable, str(HERE / "gunicorn_serve.py"), "sync"]}


class Ours(Provider):
    def __init__(self, args, tmp: Path, citizens_csv: Path, server: str = "granian"):
        self.name, self.server = server, server
        self.args, self.tmp, self.citizens_csv = args, tmp / server, citizens_csv
        self.tmp.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.outbox = self.tmp / "outbox.jsonl"
        self.db_name = f"idp_bench_{uuid.uuid4().hex[:10]}"
        self.db_url = PG_ADMIN.rsplit("/", 1)[0] + "/" + self.db_name
        self.prefix = f"idpbench:{uuid.uuid4().hex[:8]}:"
        self.config = self.tmp / "idp.toml"
        self.env = {**os.environ, "IDP_CONFIG": str(self.config)}
        for k in list(self.env):
            if k.startswith("IDP_") and k != "IDP_CONFIG":
                del self.env[k]  # the file says everything
        if args.ours_src:  # another tree's idp/ and migrations/ (e.g. `git archive HEAD idp migrations`)
            self.env["PYTHONPATH"] = str(Path(args.ours_src).resolve())

    def idp(self, *cmd: str) -> str:
        r = subprocess.run([sys.executable, "-m", "idp.cli", *cmd], env=self.env, cwd=self.tmp,
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"bench: idp {' '.join(cmd)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def setup(self) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        a = self.args
        self.config.write_text(f"""# written by bench/run.py: production settings, rate limits off for one loopback address
[server]
issuer = "{self.url}"
bind = "127.0.0.1:{self.port}"
secret_key = "{secrets.token_urlsafe(48)}"
workers = {a.workers}
threads = {a.threads}
concurrency = {a.turns}
[database]
url = "{self.db_url}"
pool_size = {a.pool_size}
[store]
url = "{REDIS_URL}"
prefix = "{self.prefix}"
[sms]
backend = "file"
outbox = "{self.outbox}"
[keys]
dir = "{self.tmp / 'keys'}"
[limits]
enabled = false
""")
        self.idp("db", "upgrade")
        self.idp("keys", "generate", "--alg", "all")
        made = json.loads(self.idp("clients", "add", "--name", "Bench", "--redirect-uri", REDIRECT,
                                   "--scope", "openid profile offline_access", "--trusted", "--json"))
        self.client_id, self.secret = made["client_id"], made["client_secret"]
        loaded = json.loads(self.idp("citizens", "import", str(self.citizens_csv), "--json"))
        if loaded.get("loaded") != self.args.citizens:
            raise SystemExit(f"bench: citizens import loaded {loaded.get('loaded')} of {self.args.citizens}")
        if not self.args.first_logins:
            self.returning_citizens()

    def returning_citizens(self) -> None:
        """Every bench citizen logged in once, yesterday (an auth event, the timestamps, counted as
        an adult), as most citizens of a running provider have: the measured logins are returning
        logins. A citizen's first login also takes the unique-adult counter's row lock, shared by
        every first login; --first-logins measures that path instead."""
        import psycopg

        with psycopg.connect(self.db_url, autocommit=False) as conn:
            conn.execute("UPDATE citizens SET first_authenticated_at = now() - interval '1 day', "
                         "last_authenticated_at = now() - interval '1 day', "
                         "first_adult_authenticated_at = now() - interval '1 day'")
            conn.execute("INSERT INTO auth_events (occurred_at, citizen_id, client_id, method, sso, adult) "
                         "SELECT now() - interval '1 day', id, %s, 'sms', false, true FROM citizens",
                         (self.client_id,))
            conn.execute("UPDATE stat_counters SET value = (SELECT count(*) FROM citizens "
                         "WHERE first_adult_authenticated_at IS NOT NULL) WHERE name = 'unique_adults'")

    def start(self) -> None:
        cmd = SERVERS[self.server]
        if self.args.server_cpu:
            cmd = ["taskset", "-c", self.args.server_cpu] + cmd
        self.logfile = self.tmp / "serve.log"
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=open(self.logfile, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.url}/healthz", self.proc, 60, self.logfile)
        self.discover()

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def cpu_groups(self) -> dict[str, list[int]]:
        # the server's process tree, the PostgreSQL backends of its database, and Redis
        return {"server": self.server_pids(), "postgres": pg_backends(self.db_name),
                "redis": pids_named("redis-server")}

    def cleanup(self) -> None:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001
            log(f"could not drop {self.db_name}: {exc}")
        try:
            import redis

            r = redis.Redis.from_url(REDIS_URL)
            batch, n = [], 0
            for key in r.scan_iter(match=self.prefix + "*", count=1000):
                batch.append(key)
                n += 1
                if len(batch) >= 1000:
                    r.delete(*batch)
                    batch = []
                if n > 5_000_000:
                    break
            if batch:
                r.delete(*batch)
        except Exception as exc:  # noqa: BLE001
            log(f"could not clear Redis keys {self.prefix}*: {exc}")


class Peer(Provider):
    name = "peer"

    def __init__(self, args, tmp: Path, citizens_csv: Path):
        self.args, self.citizens_csv = args, citizens_csv
        lock = (PEER_SRC / "package-lock.json").read_bytes() + (PEER_SRC / "server.mjs").read_bytes()
        self.dir = Path(tempfile.gettempdir()) / f"idp-bench-peer-{hashlib.sha256(lock).hexdigest()[:12]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.client_id, self.secret = "bench", "bench-secret"
        self.logfile = tmp / "peer.log"

    def setup(self) -> None:
        if not (self.dir / "node_modules" / "oidc-provider").exists():
            self.dir.mkdir(exist_ok=True)
            for f in ("package.json", "package-lock.json", "server.mjs"):
                shutil.copyfile(PEER_SRC / f, self.dir / f)
            log(f"peer: npm ci in {self.dir}")
            r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=self.dir,
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise SystemExit(f"bench: npm ci failed for the peer: {r.stderr[-1500:]}")

    def start(self) -> None:
        env = {**os.environ, "NODE_ENV": "production", "PORT": str(self.port), "HOST": "127.0.0.1",
               "WORKERS": str(self.args.peer_workers)}
        cmd = ["node", "server.mjs"]
        if self.args.server_cpu:
            cmd = ["taskset", "-c", self.args.server_cpu] + cmd
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=open(self.logfile, "wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_http(f"{self.url}/.well-known/openid-configuration", self.proc, 60, self.logfile)
        self.discover()

    def cleanup(self) -> None:
        pass


def make_citizens(n: int, path: Path) -> None:
    """N adults with valid national IDs and distinct mobiles (the peer takes any 10 digits)."""
    sys.path.insert(0, str(REPO))
    from idp.citizens.national_id import make_national_id

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["national_id", "mobile", "birth_date", "given_name", "family_name"])
        for i in range(n):
            w.writerow([make_national_id(f"{100000000 + i * 7919 % 899999999:09d}"), f"+98912{i:07d}",
                        "1980-01-01", "Bench", f"Citizen {i}"])


# ---- workloads ---------------------------------------------------------------------------------

def basic(p: Provider) -> str:
    from urllib.parse import quote

    return "Basic " + base64.b64encode(f"{quote(p.client_id, safe='')}:{quote(p.secret, safe='')}".encode()).decode()


def refresh_rotates(p: Provider, token: str) -> tuple[bool, str | None]:
    """One refresh by hand: does the provider rotate refresh tokens? (and the token to keep)"""
    import requests

    r = requests.post(p.endpoints["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": token},
                      headers={"Authorization": basic(p)}, timeout=10)
    r.raise_for_status()
    new = r.json().get("refresh_token")
    return (bool(new) and new != token), (new or token)


def fresh_access_token(p: Provider, got: dict) -> str:
    """A new access token (by a refresh by hand), so that it is live in the peer's LRU store."""
    import requests

    # rotating (ours): the token kept aside by the refresh workload; otherwise (the peer) one the
    # refresh workload kept in use, so the peer's LRU store has not dropped it
    token = got["refresh_tokens"][-1] if got.get("rotates", True) else got["refresh_tokens"][0]
    r = requests.post(p.endpoints["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": token},
                      headers={"Authorization": basic(p)}, timeout=10)
    r.raise_for_status()
    body = r.json()
    if body.get("refresh_token"):
        got["refresh_tokens"][-1] = body["refresh_token"]
    return body["access_token"]


def check_token_use(name: str, p: Provider, access: str) -> None:
    """The token the load uses gets real answers: userinfo claims, introspection active."""
    import requests

    if name == "userinfo":
        r = requests.get(p.endpoints["userinfo_endpoint"], headers={"Authorization": f"Bearer {access}"}, timeout=10)
        ok = r.status_code == 200 and "sub" in r.json()
    else:
        r = requests.post(p.endpoints["introspection_endpoint"], data={"token": access},
                          headers={"Authorization": basic(p)}, timeout=10)
        ok = r.status_code == 200 and r.json().get("active") is True
    if not ok:
        raise SystemExit(f"bench: {p.name} {name} refuses the access token: {r.status_code} {r.text[:300]}")


def start_profiler(p: Provider, name: str, args) -> list[subprocess.Popen]:
    """--profile DIR: py-spy on every worker of ours during the workload (on-CPU samples: --gil),
    written as collapsed stacks (DIR/<server>-<workload>-<pid>.txt, for flamegraph.pl or
    speedscope) with a summary of the hottest functions in DIR/<server>-<workload>-top.txt."""
    if not args.profile or not isinstance(p, Ours):
        return []
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    if not spy:
        raise SystemExit("bench: --profile needs py-spy (pip install -e '.[bench]')")
    out = Path(args.profile)
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in p.workers():
        # BENCH_SPY_FLAGS: e.g. "" for every thread on CPU, with or without the interpreter lock;
        # "--gil --native" for the native frames too (py-spy must then pause the process per sample)
        flags = os.environ.get("BENCH_SPY_FLAGS", "--gil").split()
        if "--native" not in flags:
            flags.append("--nonblocking")
        cmd = [spy, "record", "-p", str(pid), "-d", str(max(1, args.duration - 2)), "-r", "100", *flags,
               "-f", "raw", "-o", str(out / f"{p.name}-{name}-{pid}.txt")]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def profile_summary(directory: Path, name: str, top: int = 60) -> None:
    """The hottest functions (inclusive and self) of a workload's collapsed stacks."""
    from collections import Counter

    incl, own, total = Counter(), Counter(), 0
    for f in directory.glob(f"{name}-*.txt"):
        if f.name.endswith("-top.txt"):
            continue
        for line in f.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            frames = [re.sub(r":\d+\)$", ")", x) for x in stack.split(";")]
            total += int(n)
            for x in set(frames):
                incl[x] += int(n)
            own[frames[-1]] += int(n)
    if not total:
        return
    lines = [f"{total} samples (on CPU, holding the GIL)", "--- inclusive"]
    lines += [f"{100 * n / total:5.1f}% {x}" for x, n in incl.most_common(top)]
    lines += ["--- self"] + [f"{100 * n / total:5.1f}% {x}" for x, n in own.most_common(top // 2)]
    (directory / f"{name}-top.txt").write_text("\n".join(lines) + "\n")


def run_workload(name: str, p: Provider, args, tmp: Path, state: dict) -> dict:
    target = p.name
    t = tmp / target
    t.mkdir(exist_ok=True)
    ep = p.endpoints
    meter = CpuMeter(p.cpu_groups)
    spies = start_profiler(p, name, args)
    if name == "login":
        with meter:
            r = flow("login", target, p, args, t, duration=args.duration, max=args.requests)
    elif name == "token":
        with meter:
            r = flow("token", target, p, args, t, batch=args.batch, out=t / "tokens.json", duration=args.duration,
                     max=args.requests)
        if r.get("collect_errors"):
            log(f"{target}: {r['collect_errors']} errors collecting codes: {r['collect_error_samples']}")
        log(f"{target}: codes collected by SSO /authorize at {r['collect_rate']:.0f}/s (not timed)")
        state[target] = json.loads((t / "tokens.json").read_text())
    elif name == "refresh":
        got = state.get(target)
        if not got or len(got["refresh_tokens"]) < args.concurrency + 2:
            return {"skipped": "needs the refresh tokens of the token workload"}
        tokens = got["refresh_tokens"][:-1][: args.concurrency * 4]  # the last one is kept for later workloads
        rotate, tokens[0] = refresh_rotates(p, tokens[0])
        (t / "refresh.txt").write_text("\n".join(tokens) + "\n")
        with meter:
            r = wrk(ep["token_endpoint"], args, t, "refresh",
                    {"script": "refresh.lua", "BENCH_TOKENS": str(t / "refresh.txt"), "BENCH_ROTATE": "1" if rotate else "0",
                     "BENCH_AUTH": basic(p)})
        r["rotates"] = got["rotates"] = rotate
    elif name in ("userinfo", "introspect"):
        got = state.get(target)
        if not got or not got.get("refresh_tokens"):
            return {"skipped": "needs a refresh token from the token workload"}
        access = fresh_access_token(p, got)
        if name == "userinfo":
            env = {"BENCH_AUTH": f"Bearer {access}"}
            url = ep["userinfo_endpoint"]
        else:
            env = {"BENCH_METHOD": "POST", "BENCH_AUTH": basic(p),
                   "BENCH_BODY": f"token={access}&token_type_hint=access_token"}
            url = ep["introspection_endpoint"]
        check_token_use(name, p, access)
        with meter:
            r = wrk(url, args, t, name, env)
        check_token_use(name, p, access)  # still valid after the run: every answer was a real one
    else:
        url = f"{p.url}/.well-known/openid-configuration" if name == "discovery" else ep["jwks_uri"]
        with meter:
            r = wrk(url, args, t, name, {})
    for spy in spies:
        spy.wait(args.duration + 30)
    r["server_cores"] = meter.cores
    r["server_cores_split"] = meter.split
    if r.get("throughput"):
        r["server_cpu_ms_per_op"] = 1000 * meter.cores / r["throughput"]
    return r


# ---- report ------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M).group(1)
    except (OSError, AttributeError):
        pass
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gb": round(mem / 1024, 1), "kernel": platform.release(),
            "python": platform.python_version(),
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}


def fmt(v, spec=",.0f", empty="-"):
    return empty if v is None else format(v, spec)


SERVER_LABELS = {"granian": "granian (idp serve), {w} workers x {t} threads, {c} running at once",
                 "gthread": "gunicorn gthread, {w} workers x {t} threads", "sync": "gunicorn sync, {w} workers"}


def report(results: dict, args, info: dict) -> str:
    names = args.servers + ([] if args.skip_peer else ["peer"])
    ratios = [(s, "peer") for s in args.servers if not args.skip_peer]
    ratios += [(args.servers[0], s) for s in args.servers[1:]]
    lines = [f"bench {info['date']}  machine: nproc {info['machine']['nproc']}, {info['machine']['cpu']}, "
             f"{info['machine']['mem_gb']} GB; node {info['machine']['node']}, python {info['machine']['python']}",
             "ours: " + "; ".join(SERVER_LABELS[s].format(w=args.workers, t=args.threads, c=args.turns) for s in args.servers)
             + ", PostgreSQL + Redis" + ("" if args.skip_peer else
                                         f"; peer: oidc-provider, {args.peer_workers} process(es), in memory"),
             f"{args.concurrency} concurrent clients, {args.duration} s per workload, {args.citizens} citizens "
             + ("never logged in before; " if args.first_logins else "each logged in once before; ")
             + (f"servers on CPU {args.server_cpu}, generators on CPU {args.gen_cpu}" if args.server_cpu
                else "no CPU pinning (servers, PostgreSQL, Redis and generators share every core)"),
             "",
             f"{'workload':<22} " + " | ".join(f"{n + '/s':>9} {'p50':>6} {'p99':>6} {'err':>4}" for n in names)
             + " | " + " ".join(f"{a + '/' + b:>15}" for a, b in ratios) + f" | {'CPU ms/op':>14}"]
    for name in args.only:
        row = results.get(name, {})
        cells = []
        for n in names:
            r = row.get(n, {})
            cells.append(f"{fmt(r.get('throughput')):>9} {fmt(r.get('p50_ms'), '.1f'):>6} {fmt(r.get('p99_ms'), '.1f'):>6} "
                         f"{fmt(r.get('errors'), 'd'):>4}")
        quotients = []
        for a, b in ratios:
            ta, tb = row.get(a, {}).get("throughput"), row.get(b, {}).get("throughput")
            quotients.append(f"{fmt(ta / tb if ta and tb else None, '.2f'):>15}")
        cpu = "/".join(fmt(row.get(n, {}).get("server_cpu_ms_per_op"), ".1f") for n in names)
        lines.append(f"{LABELS[name]:<22} " + " | ".join(cells) + " | " + " ".join(quotients) + f" | {cpu:>14}")
    lines.append("(latencies in ms; a login's latency is the whole flow; a/b = throughput of a over b; "
                 "CPU ms/op = CPU each server used per operation (" + "/".join(names)
                 + "), ours including PostgreSQL and Redis)")
    for server, memory in info.get("memory", {}).items():
        lines.append(f"{server}, memory per worker (RSS / peak MB): " + ", ".join(f"{r:.0f}/{h:.0f}" for r, h in memory))
    for name in args.only:
        for who in names:
            r = results.get(name, {}).get(who, {})
            if r.get("error_samples"):
                lines.append(f"  {who} {name} errors: {r['error_samples']}")
            if r.get("skipped"):
                lines.append(f"  {who} {name} skipped: {r['skipped']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per workload and provider (default 10)")
    ap.add_argument("--concurrency", type=int, default=32, help="concurrent clients (default 32)")
    ap.add_argument("--requests", type=int, default=20000,
                    help="at most this many login flows or code exchanges per provider (default 20000)")
    ap.add_argument("--batch", type=int, default=200,
                    help="codes collected (untimed) before each timed batch of exchanges (default 200)")
    ap.add_argument("--citizens", type=int, default=2000, help="citizens registered (default 2000)")
    ap.add_argument("--workers", type=int, default=0, help="worker processes (default 0: two per core, as idp serve)")
    ap.add_argument("--threads", type=int, default=16, help="threads per worker (default 16, as idp serve)")
    ap.add_argument("--turns", type=int, default=1,
                    help="requests a worker runs at once, [server] concurrency (default 1, as idp serve)")
    ap.add_argument("--pool-size", type=int, default=10, help="database pool per worker (default 10)")
    ap.add_argument("--first-logins", action="store_true",
                    help="citizens who never logged in (default: each logged in once, yesterday)")
    ap.add_argument("--ours-src", metavar="DIR",
                    help="run our provider from DIR/idp instead of this checkout (before/after comparisons)")
    ap.add_argument("--servers", default="granian",
                    help="comma-separated serving models of ours, each measured in the same run: granian (idp "
                         "serve, the default), gthread and sync (gunicorn, bench/gunicorn_serve.py)")
    ap.add_argument("--peer-workers", type=int, default=1, help="peer processes (default 1, as its README)")
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--pin", choices=["none", "split"], default="none",
                    help="split: servers on CPU 0, generators on CPU 1 (PostgreSQL and Redis unpinned)")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--json", dest="json_out", help="also write the results here")
    ap.add_argument("--profile", metavar="DIR", help="py-spy every worker of ours during each workload, into DIR")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = ap.parse_args()
    asked = [w.strip() for w in args.only.split(",") if w.strip()]
    args.only = [w for w in WORKLOADS if w in asked]  # in this order: later workloads use earlier tokens
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.workers = args.workers or 2 * (os.cpu_count() or 1)  # as idp serve: two per core
    bad = [w for w in asked if w not in WORKLOADS] + [s for s in args.servers if s not in SERVERS]
    bad += ["--servers twice the same"] if len(set(args.servers)) != len(args.servers) else []
    if bad or not 1 <= args.concurrency <= 512 or not 1 <= args.duration <= 300 or args.requests < 1:
        ap.error(f"bad arguments {bad or ''} (concurrency 1-512, duration 1-300 s)")
    if args.citizens < args.concurrency:
        ap.error("--citizens must be at least --concurrency")
    args.server_cpu, args.gen_cpu = ("0", "1") if args.pin == "split" and (os.cpu_count() or 1) >= 2 else (None, None)
    for tool in ("wrk", "node") + (() if args.skip_peer else ("npm",)):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (apt-get install -y wrk nodejs npm)")

    # SIGTERM (a timeout, a kill) ends the run through the clean-up below, like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    tmp = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    citizens_csv = tmp / "citizens.csv"
    make_citizens(args.citizens, citizens_csv)
    provs: list[Provider] = [Ours(args, tmp, citizens_csv, server) for server in args.servers]
    if not args.skip_peer:
        provs.append(Peer(args, tmp, citizens_csv))
    info = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
            "args": {k: v for k, v in vars(args).items()}}
    results: dict = {}
    try:
        for p in provs:
            log(f"{p.name}: setting up")
            p.setup()
            p.start()
            log(f"{p.name}: {p.url}")
        state: dict = {}
        for name in args.only:
            for p in provs:
                log(f"{name} on {p.name} ...")
                r = run_workload(name, p, args, tmp, state)
                results.setdefault(name, {})[p.name] = r
                if args.profile and isinstance(p, Ours):
                    profile_summary(Path(args.profile), f"{p.name}-{name}")
                if "throughput" in r:
                    log(f"  {p.name} {name}: {r['throughput']:,.0f}/s p50 {fmt(r['p50_ms'], '.1f')} ms "
                        f"p99 {fmt(r['p99_ms'], '.1f')} ms errors {r['errors']} "
                        f"(generator CPU {r['generator_cpu_s']:.1f} s)")
                if r.get("error_samples"):
                    log(f"  {p.name} {name}: errors {r['error_samples']}")
                if r.get("server_cores_split"):
                    log(f"  {p.name} {name}: server CPU " + ", ".join(
                        f"{k} {v:.2f}" for k, v in r["server_cores_split"].items()) + " cores"
                        + (f"; {r['server_cpu_ms_per_op']:.1f} ms CPU per op" if r.get("server_cpu_ms_per_op") else ""))
                if r.get("steps_ms"):
                    log(f"  {p.name} {name}: mean ms per step {r['steps_ms']}")
                time.sleep(1)
        info["memory"] = {p.name: [rss_mb(w) for w in p.workers()] for p in provs if isinstance(p, Ours)}
    finally:
        for p in provs:
            p.stop()
            p.cleanup()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, args, info)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"info": info, "results": results}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
