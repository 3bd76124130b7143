"""Prometheus metrics at /metrics: protected by a bearer token, counting logins by method and
result, codes sent, wrong codes, locks, tokens by grant, latency by endpoint, and the exact
unique-adult gauge; summed across forked worker processes (multiprocess mode)."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from idp.platform.settings import ConfigError

from .helpers import mobile_e164, redirect_params

TOKEN = secrets.token_urlsafe(32)


def scrape(live, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{live.url}/metrics", headers=headers, timeout=10)


def samples(live) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    resp = scrape(live)
    assert resp.status_code == 200, resp.text
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snapshot: dict, name: str, **labels) -> float:
    return snapshot.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture()
def live(make_provider):
    return make_provider(metrics={"enabled": True, "token": TOKEN})


def test_metrics_need_the_bearer_token(live, make_provider):
    assert scrape(live, token=None).status_code == 401
    wrong = scrape(live, token=TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B"))
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    assert scrape(live).status_code == 200
    assert scrape(live).headers["Cache-Control"] == "no-store"
    off = make_provider()
    assert scrape(off).status_code == 404
    with pytest.raises(ConfigError, match=r"\[metrics\] token"):
        make_provider(metrics={"enabled": True})


def test_a_login_is_counted(live):
    from idp.citizens.counting import unique_adults

    client_id, secret, redirect = live.add_client(trusted=True)
    national_id, mobile = live.add_citizen()
    before = samples(live)

    flow = live.flow()
    page = flow.start(client_id, redirect)
    page = flow.follow(flow.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = live.outbox.last_code(mobile_e164(mobile))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    page = flow.submit(page, {"otp": wrong})
    assert page.status_code == 400
    final = flow.follow(flow.submit(page, {"otp": code}), redirect)
    params = redirect_params(final, redirect)
    token = flow.exchange(client_id, secret, redirect, params["code"])
    assert token.status_code == 200
    # an SSO login into a second agency, and a refused token request
    other_id, other_secret, other_redirect = live.add_client(trusted=True)
    sso = redirect_params(flow.start(other_id, other_redirect), other_redirect)
    assert "code" in sso
    assert flow.exchange(other_id, other_secret, other_redirect, "not-a-code").status_code == 400

    after = samples(live)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("idp_logins_total", method="sms", result="success") == 1
    assert grew("idp_logins_total", method="sms", result="sso") == 1
    assert grew("idp_logins_total", method="sms", result="wrong_code") == 1
    assert grew("idp_otp_wrong_codes_total", method="sms") == 1
    assert grew("idp_otp_codes_sent_total", result="sent") == 1
    assert grew("idp_tokens_issued_total", grant="authorization_code") == 1
    assert grew("idp_token_errors_total", grant="authorization_code") == 1
    assert grew("idp_request_duration_seconds_count", endpoint="/token", method="POST") == 2
    assert grew("idp_request_duration_seconds_count", endpoint="/login/code", method="POST") == 2
    with live.app.app_context():
        assert value(after, "idp_unique_adults") == unique_adults() >= 1
    assert value(after, "idp_unique_citizens_today") >= 1


def test_locks_and_rate_limits_are_counted(make_provider):
    live = make_provider(metrics={"enabled": True, "token": TOKEN},
                         login={"otp_attempts": 2}, limits={"failures_before_cooloff": 2, "codes_per_mobile": "1/3600"})
    client_id, _, redirect = live.add_client(trusted=True)
    national_id, mobile = live.add_citizen()
    before = samples(live)
    flow = live.flow()
    page = flow.start(client_id, redirect)
    page = flow.follow(flow.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = live.outbox.last_code(mobile_e164(mobile))
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert flow.submit(page, {"otp": wrong}).status_code == 400
    # the second wrong code uses up the challenge and starts the pair's cool-off: 429, with the wait
    locked = flow.submit(page, {"otp": wrong})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0, locked.status_code
    # a relative sharing the mobile: no cool-off for that pair, but the mobile's own limit is used up
    relative, _ = live.add_citizen(mobile=mobile_e164(mobile))
    again = live.flow()
    page = again.start(client_id, redirect)
    assert again.submit(page, {"national_id": relative, "mobile": mobile}).status_code == 429
    after = samples(live)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("idp_logins_total", method="sms", result="locked") == 1
    assert grew("idp_lockouts_total", kind="challenge") == 1
    assert grew("idp_lockouts_total", kind="cooloff") == 1
    assert grew("idp_rate_limited_total", limit="codes_per_mobile") == 1


MULTIPROCESS = textwrap.dedent("""
    import multiprocessing as mp, os, sys
    from idp.platform.settings import load_settings
    settings = load_settings(None, env={}, overrides={
        "server": {"secret_key": "m" * 40}, "database": {"url": "sqlite:///" + sys.argv[1] + "/idp.db"},
        "metrics": {"enabled": True, "token": "t" * 40, "multiproc_dir": sys.argv[1] + "/prom"}})
    from idp.platform import metrics
    assert metrics.prepare_multiprocess(settings) == sys.argv[1] + "/prom"

    def worker(n):
        for _ in range(n):
            metrics.login("totp", "success")
        metrics.code_sent("failed")

    if __name__ == "__main__":
        ctx = mp.get_context("fork")  # as idp serve forks its workers
        procs = [ctx.Process(target=worker, args=(n,)) for n in (3, 4)]
        [p.start() for p in procs]
        [p.join() for p in procs]
        from idp import create_app
        from idp.platform.database import upgrade_database
        app = create_app(settings, require_keys=False)
        upgrade_database(app)
        with app.app_context():
            body, _ = metrics.exposition()
        print(body.decode())
""")


def test_worker_processes_are_summed(tmp_path):
    script = tmp_path / "workers.py"
    script.write_text(MULTIPROCESS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "PROMETHEUS_"))}
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=120, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families(out.stdout) for s in f.samples}
    assert found[("idp_logins_total", (("method", "totp"), ("result", "success")))] == 7
    assert found[("idp_otp_codes_sent_total", (("result", "failed"),))] == 2
    assert found[("idp_unique_adults", ())] == 0


def test_a_worker_starting_marks_the_dead_ones(tmp_path, monkeypatch):
    """A dead worker's live gauges go (its last value would otherwise stay in every scrape); its
    counters stay, so that the sums never go back; a live process's files are left alone."""
    from idp.platform import metrics

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    names = [f"counter_{dead}.db", f"gauge_livesum_{dead}.db", f"gauge_livesum_{os.getpid()}.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    metrics.forget_dead_workers()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[2]])
