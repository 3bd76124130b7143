"""The `idp` command line, run as an operator runs it: a real process, real files, real databases."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import requests

from .helpers import free_port, run_idp


@pytest.fixture()
def env(tmp_path) -> dict:
    """An operator's environment: SQLite in a temp dir, keys there too."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "IDP_SERVER_SECRET_KEY": "t" * 48, "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.db'}",
            "IDP_KEYS_DIR": str(tmp_path / "keys"), "IDP_SMS_BACKEND": "file",
            "IDP_SMS_OUTBOX": str(tmp_path / "outbox.jsonl")}


def test_operator_session(env, tmp_path):
    assert run_idp(env, "db", "upgrade").returncode == 0
    out = run_idp(env, "keys", "generate", "--json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert {k["alg"] for k in made} == {"RS256", "ES256"}
    for key in made:
        mode = stat.S_IMODE((tmp_path / "keys" / f"{key['kid']}.json").stat().st_mode)
        assert mode == 0o600
    listed = json.loads(run_idp(env, "keys", "list", "--json").stdout)
    assert {k["kid"] for k in listed} == {k["kid"] for k in made}

    out = run_idp(env, "clients", "add", "--name", "Report cards", "--redirect-uri", "https://school.example.ir/cb",
              "--scope", "openid profile", "--trusted", "--json")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert created["client_id"] and len(created["client_secret"]) >= 40
    public = json.loads(run_idp(env, "clients", "add", "--name", "App", "--redirect-uri", "http://127.0.0.1:7/cb",
                            "--public", "--json").stdout)
    assert public["client_secret"] is None
    listed = json.loads(run_idp(env, "clients", "list", "--json").stdout)
    assert [c["client_id"] for c in listed] == [created["client_id"], public["client_id"]]
    assert created["client_secret"] not in (tmp_path / "idp.db").read_bytes().decode("latin-1")

    out = run_idp(env, "citizens", "add", "--national-id", "۰۰۱۲۳۴۵۶۷۹", "--mobile", "09121234567",
              "--birth-date", "1990-01-01", "--given-name", "سارا", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"national_id": "0012345679", "mobile": "+989121234567",
                                      "birth_date": "1990-01-01"}
    csv_file = tmp_path / "registry.csv"
    csv_file.write_text("national_id,mobile,birth_date,given_name,family_name\n"
                        "0023456787,09351112233,1985-02-03,علی,رضایی\n"
                        "0023456788,09351112233,1985-02-03,bad,checkdigit\n"
                        "0034567895,0935111223,1985-02-03,bad,mobile\n"
                        "0034567895,09129876543,1962-12-30,مریم,کریمی\n"
                        "0034567895,09129876543,1962-12-30,dup,row\n"
                        "0012345679,09120000000,1990-01-01,سارا,نو\n", encoding="utf-8")
    out = run_idp(env, "citizens", "import", str(csv_file), "--json")
    assert out.returncode == 3, out.stderr  # rows were rejected; the valid ones are loaded
    report = json.loads(out.stdout)
    assert report["loaded"] == 3 and report["rejected"] == 3
    assert {r["line"] for r in report["rejections"]} == {3, 4, 6}

    stats = json.loads(run_idp(env, "stats", "--json").stdout)
    assert stats["unique_adults"] == 0 and stats["adult_population"] == 3 and stats["coverage_percent"] == 0


@pytest.mark.parametrize("args,env_extra,message", [
    (("stats",), {"IDP_SERVER_SECRET_KEY": "short"}, "idp: configuration: [server] secret_key"),
    (("stats",), {"IDP_DATABASE_URL": "oracle://x"}, "idp: configuration: [database] url"),
    (("clients", "add", "--name", "X", "--redirect-uri", "http://evil.example/cb"), {}, "plain http"),
    (("clients", "add", "--name", "X", "--redirect-uri", "https://a.example/*"), {}, "wildcards"),
    (("clients", "add", "--name", "X", "--redirect-uri", "https://a.example/cb#frag"), {}, "fragment"),
    (("clients", "add", "--name", "X", "--redirect-uri", "https://a.example/cb", "--scope", "openid email"), {},
     "--scope: email not offered here"),
    (("clients", "add", "--name", "X", "--redirect-uri", "https://a.example/cb", "--scope", "openid national_id"), {},
     "--allow-national-id"),
    (("citizens", "add", "--national-id", "0012345678", "--mobile", "09121234567", "--birth-date", "1990-01-01"),
     {}, "national_id"),
    (("citizens", "import", "/no/such/file.csv"), {}, "no such file"),
    (("serve",), {"IDP_STORE_URL": "memory://"}, "memory://"),
    (("serve",), {"IDP_SERVER_ISSUER": "http://login.example.ir"}, "[server] issuer: must be https"),
])
def test_errors_are_one_line_and_nonzero(env, args, env_extra, message):
    assert run_idp(env, "db", "upgrade").returncode == 0
    out = run_idp({**env, **env_extra}, *args)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_serve_runs_on_postgres_and_redis(env, tmp_path, postgres_url, redis_url):
    """`idp serve` with production settings answers over HTTP from its workers, and says loudly
    when the rate limits are off."""
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    port = free_port()
    prod = {**env, "IDP_DATABASE_URL": postgres_url, "IDP_STORE_URL": redis_url,
            "IDP_STORE_PREFIX": f"idpserve{port}:", "IDP_SERVER_BIND": f"127.0.0.1:{port}",
            "IDP_SERVER_ISSUER": f"http://127.0.0.1:{port}", "IDP_SERVER_WORKERS": "2", "IDP_LIMITS_ENABLED": "false"}
    assert run_idp(prod, "db", "upgrade").returncode == 0
    assert run_idp(prod, "keys", "generate").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "idp.cli", "serve"], env=prod, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.3)  # real time: `idp serve` is a separate process starting up
        assert r.status_code == 200 and r.json()["issuer"] == f"http://127.0.0.1:{port}"
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json() == {"status": "ok"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    assert "WARNING: rate limits are OFF" in proc.stdout.read().decode()
