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
    (("keys", "generate"), {"IDP_KEYS_DIR": "/proc/no/keys"}, "idp: /proc/no: No such file or directory"),
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


OFFERED = "openid profile phone national_id age offline_access"


@pytest.mark.parametrize("args,code,line", [
    # Click's own usage errors: one line in the project's style, the command and its help named
    (("clients", "add"), 2, "idp: clients add: missing option '--name' (see idp clients add --help)"),
    (("stats", "--by", "week"), 2,
     "idp: stats: invalid value for '--by': 'week' is not one of 'day', 'month', 'agency-pair' (see idp stats --help)"),
    (("--bogus",), 2, "idp: no such option '--bogus' (see idp --help)"),
    (("bogus",), 2, "idp: no such command 'bogus' (see idp --help)"),
    (("clients", "show"), 2, "idp: clients show: missing argument 'CLIENT_ID' (see idp clients show --help)"),
    (("audit", "tail", "--event", "bogus"), 2,
     "idp: audit tail: invalid value for '--event': 'bogus' is not an audit event (known: {events}) "
     "(see idp audit tail --help)"),
    (("stats", "--plot", "{tmp}/missing/figures.png"), 2,
     "idp: stats: invalid value for '--plot': no folder {tmp}/missing to write figures.png in "
     "(see idp stats --help)"),
    # the commands' own refusals, in the same style
    (("stats", "--plot", "/proc/figures.png"), 1, "idp: stats: --plot /proc/figures.png: No such file or directory"),
    (("clients", "add", "--name", "X", "--redirect-uri", "https://a.example/cb", "--scope", "openid email"), 1,
     f"idp: --scope: email not offered here (offered: {OFFERED})"),
    (("citizens", "add", "--national-id", "0012345679", "--mobile", "09121234567", "--birth-date", "1250-01-01"), 1,
     "idp: birth_date: before 1900 (1250-01-01 is Jalali: 1871-03-21)"),
    (("citizens", "add", "--national-id", "0012345679", "--mobile", "09121234567", "--birth-date", "1370-12-31"), 1,
     "idp: birth_date: not a Jalali calendar date (a year before 1700 is Jalali)"),
    (("citizens", "add", "--national-id", "0012345679", "--mobile", "09121234567", "--birth-date", "1899-12-31"), 1,
     "idp: birth_date: before 1900"),
])
def test_every_failure_is_the_same_one_line(env, tmp_path, args, code, line):
    """Usage errors included: exactly one line on standard error, nothing on standard output,
    no "Usage:" block, no exception name."""
    from idp.platform.audit import EVENTS

    assert run_idp(env, "db", "upgrade").returncode == 0
    out = run_idp(env, *(a.format(tmp=tmp_path) for a in args))
    assert (out.returncode, out.stdout, out.stderr) == \
        (code, "", line.format(tmp=tmp_path, events=", ".join(EVENTS)) + "\n")


def test_help_is_still_clicks_help(env):
    out = run_idp(env, "clients", "add", "--help")
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("Usage: ") and "--name-fa TEXT" in out.stdout and "Options:" in out.stdout


def test_citizens_add_reads_jalali_birth_dates_as_stats_does(env):
    """A year before 1700 is Jalali, as in `idp stats`: 1370-01-01 is 21 March 1991, in any digits."""
    assert run_idp(env, "db", "upgrade").returncode == 0
    out = run_idp(env, "citizens", "add", "--national-id", "0012345679", "--mobile", "09121234567",
                  "--birth-date", "1370-01-01")
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout == "added 0012345679 (0912***4567), born 1991-03-21 (Jalali 1370-01-01)\n"
    out = run_idp(env, "citizens", "add", "--national-id", "0023456787", "--mobile", "09121234568",
                  "--birth-date", "۱۳۹۵/۱۲/۳۰", "--json")  # a Jalali leap day
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["birth_date"] == "2017-03-20"
    out = run_idp(env, "citizens", "add", "--national-id", "0034567895", "--mobile", "09121234569",
                  "--birth-date", "1990-01-01")
    assert out.stdout == "added 0034567895 (0912***4569), born 1990-01-01\n"
    # the figures count them by the Gregorian dates stored: two adults, one minor
    assert json.loads(run_idp(env, "stats", "--json").stdout)["adult_population"] == 2


def test_clients_show_every_field(env):
    assert run_idp(env, "db", "upgrade").returncode == 0
    out = run_idp(env, "clients", "add", "--client-id", "tax", "--name", "Tax returns",
                  "--name-fa", "اظهارنامه‌ی مالیاتی",
                  "--redirect-uri", "https://tax.example.ir/cb", "--redirect-uri", "https://my.tax.example.ir/cb",
                  "--post-logout-redirect-uri", "https://tax.example.ir/", "--scope", "openid profile national_id",
                  "--allow-national-id", "--sector", "tax.example.ir", "--auth-method", "client_secret_post",
                  "--backchannel-logout-uri", "https://tax.example.ir/bc", "--trusted", "--accepts-guardians")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    out = run_idp(env, "clients", "show", "tax")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    created = lines[4].removeprefix("created: ")
    assert lines == [
        "client_id: tax",
        "name: Tax returns",
        "name (Persian): اظهارنامه‌ی مالیاتی",
        "status: enabled",
        f"created: {created}",
        "trusted: yes (no consent page)",
        "guardians: accepted (a guardian may act for a linked minor; tokens carry act)",
        "auth method: client_secret_post (a secret, stored hashed)",
        "redirect URIs: https://tax.example.ir/cb https://my.tax.example.ir/cb",
        "post-logout redirect URIs: https://tax.example.ir/",
        "scopes: openid profile national_id",
        "national ID: allowed (national_id scope)",
        "subject type: pairwise",
        "sector: tax.example.ir (--sector)",
        "back-channel logout URI: https://tax.example.ir/bc (session required)",
        "grant types: authorization_code",
        "response types: code",
    ]
    assert created.startswith("20")
    shown = json.loads(run_idp(env, "clients", "show", "tax", "--json").stdout)
    assert {k: shown[k] for k in ("name_fa", "allow_national_id", "sector", "token_endpoint_auth_method",
                                  "trusted", "accepts_guardians", "disabled_at")} == \
        {"name_fa": "اظهارنامه‌ی مالیاتی", "allow_national_id": True, "sector": "tax.example.ir",
         "token_endpoint_auth_method": "client_secret_post", "trusted": True, "accepts_guardians": True,
         "disabled_at": None}
    assert shown["metadata"]["backchannel_logout_uri"] == "https://tax.example.ir/bc"
    assert shown["metadata"]["redirect_uris"] == ["https://tax.example.ir/cb", "https://my.tax.example.ir/cb"]

    # what is absent is said so; a public client's sector is none
    assert run_idp(env, "clients", "add", "--client-id", "app", "--name", "App", "--public", "--subject-type",
                   "public", "--redirect-uri", "http://127.0.0.1:7/cb").returncode == 0
    assert run_idp(env, "clients", "disable", "app").returncode == 0
    lines = run_idp(env, "clients", "show", "app").stdout.splitlines()
    assert lines[2] == "name (Persian): (none: Persian pages show 'App')"
    assert lines[3].startswith("status: disabled since 20")
    assert lines[5:] == [
        "trusted: no (citizens are asked for consent)",
        "guardians: not accepted",
        "auth method: none",
        "redirect URIs: http://127.0.0.1:7/cb",
        "post-logout redirect URIs: (none)",
        "scopes: openid profile",
        "national ID: not allowed",
        "subject type: public",
        "sector: (none: public subjects, the same sub for every client)",
        "back-channel logout URI: (none)",
        "grant types: authorization_code",
        "response types: code",
    ]
    shown = json.loads(run_idp(env, "clients", "show", "app", "--json").stdout)
    assert (shown["name_fa"], shown["allow_national_id"], shown["sector"]) == (None, False, None)


def test_clients_add_warns_of_what_it_cannot_know_was_meant(env):
    """No Persian name, or a pairwise sector shared with another client for want of --sector: the
    client is registered, with one warning line each on standard error."""
    assert run_idp(env, "db", "upgrade").returncode == 0

    def add(*args):
        out = run_idp(env, "clients", "add", "--json", *args)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["client_secret"]
        return out.stderr.splitlines()

    assert add("--client-id", "school", "--name", "Report cards", "--name-fa", "کارنامه",
               "--redirect-uri", "https://apps.example.ir/school/cb") == []
    assert add("--client-id", "tax", "--name", "Tax", "--redirect-uri", "https://apps.example.ir/tax/cb") == [
        "idp: warning: tax has no Persian name (--name-fa): Persian pages will show its English name 'Tax'",
        "idp: warning: tax shares the pairwise sector apps.example.ir with school: they see the same sub for every "
        "citizen; if they are separate agencies, disable tax and add it again with --sector HOST (a host of its "
        "own, e.g. its domain)",
    ]
    # a sector of its own, or public subjects, shares nothing by accident
    assert add("--client-id", "tax2", "--name", "Tax", "--name-fa", "مالیات", "--sector", "tax.example.ir",
               "--redirect-uri", "https://apps.example.ir/tax2/cb") == []
    assert add("--client-id", "pub", "--name", "Pub", "--name-fa", "عمومی", "--subject-type", "public",
               "--redirect-uri", "https://apps.example.ir/pub/cb") == []
    assert run_idp(env, "audit", "tail", "--event", "client_registered").stdout.count("client_registered") == 4
    assert "sector: apps.example.ir (the redirect URIs' host: every client there without --sector sees the same " \
        "sub)" in run_idp(env, "clients", "show", "tax").stdout.splitlines()


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
