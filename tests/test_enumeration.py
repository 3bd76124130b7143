"""No enumeration: whether a national ID exists, whether the mobile is its owner's, and whether
a limit was hit for a known or an unknown pair, the answer is the same and takes the same time.

The timing is measured over HTTP, interleaving the cases in random order and comparing
medians; a difference above the tolerance means a code path does more work for one case
(for example, sending the SMS inside the request)."""
from __future__ import annotations

import random
import re
import statistics
import time

import requests

from idp.citizens.national_id import make_national_id

from .conftest import GENEROUS_IP_LIMITS
from .helpers import form_fields, login_url, wait_until

SAMPLES = 60
WARMUP = 10
#: The fine measurement under `idp serve`: samples per case, and the gap in medians it allows.
FINE_SAMPLES = 300
FINE_TOLERANCE = 0.00035


def _interaction(provider, client):
    """A browser paused at the login form; returns (session, form url, csrf)."""
    client_id, _, redirect = client
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    return browser.http, login_url(page), form_fields(page.text)["csrf_token"]


def _measure(provider, client, cases: dict[str, tuple[str, str]]):
    sessions = {name: _interaction(provider, client) for name in cases}
    timings = {name: [] for name in cases}
    bodies = {}
    order = [name for name in cases for _ in range(SAMPLES + WARMUP)]
    random.Random(7).shuffle(order)
    seen = {name: 0 for name in cases}
    for name in order:
        http, url, csrf = sessions[name]
        nid, mobile = cases[name]
        t0 = time.perf_counter()
        r = http.post(url, data={"csrf_token": csrf, "national_id": nid, "mobile": mobile},
                      allow_redirects=False, timeout=10)
        elapsed = time.perf_counter() - t0
        seen[name] += 1
        if seen[name] > WARMUP:
            timings[name].append(elapsed)
        bodies[name] = (r.status_code, re.sub(r"r=[A-Za-z0-9_\-]+|csrf_token[^>]*", "", r.text),
                        sorted(k for k in r.headers if k.lower() not in ("date", "content-length", "set-cookie")))
    return {k: statistics.median(v) for k, v in timings.items()}, bodies


def _timing_gap(medians: dict[str, float]) -> str | None:
    """None when the medians agree within the tolerance, else a description of the gap."""
    base = min(medians.values())
    tolerance = max(0.003, 0.25 * base)
    spread = max(medians.values()) - base
    if spread < tolerance:
        return None
    return f"timing differs by {spread * 1000:.2f} ms: " + ", ".join(
        f"{k} {v * 1000:.2f} ms" for k, v in medians.items())


def _assert_same_time(measure):
    """A real difference shows in every run; a busy machine's noise does not: up to 3 runs."""
    gaps = []
    for _ in range(3):
        medians, bodies = measure()
        gap = _timing_gap(medians)
        if gap is None:
            return bodies
        gaps.append(gap)
    raise AssertionError("; ".join(gaps))


def test_same_answer_and_time_whether_the_pair_is_registered(make_provider):
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "100000/900",
                                     "codes_per_national_id_daily": "100000/86400",
                                     "codes_per_mobile": "100000/86400"})
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    cases = {"registered pair": (national_id, mobile),
             "wrong mobile": (national_id, "+98935" + mobile[6:]),
             "unknown national ID": (make_national_id("918273645"), mobile)}
    bodies = _assert_same_time(lambda: _measure(provider, client, cases))
    assert len({b for b in map(lambda b: (b[0], b[1], tuple(b[2])), bodies.values())}) == 1, bodies
    assert all(b[0] == 303 for b in bodies.values())
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) % (SAMPLES + WARMUP) == 0 and provider.outbox.messages(mobile)


def test_a_slow_gateway_adds_no_time_for_registered_pairs(make_provider, gateway):
    """With a gateway that takes 30 ms per message, sending inside the request would show."""
    gateway.reply((200, {"ok": True}, 0.03))
    provider = make_provider(
        sms={"backend": "http", "http_provider": "webhook", "http_url": gateway.url + "/sms"},
        limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "100000/900",
                "codes_per_national_id_daily": "100000/86400", "codes_per_mobile": "100000/86400"})
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    sent_before = len(gateway.requests)
    bodies = _assert_same_time(lambda: _measure(provider, client, {
        "registered pair": (national_id, mobile),
        "unknown national ID": (make_national_id("918273645"), mobile)}))
    assert all(b[0] == 303 for b in bodies.values())
    assert wait_until(lambda: (len(gateway.requests) - sent_before) % (SAMPLES + WARMUP) == 0
                      and len(gateway.requests) > sent_before, 10), len(gateway.requests)


def test_identify_takes_the_same_time_under_idp_serve(tmp_path, fresh_database, redis_url):
    """`idp serve` as shipped, many samples, a fine tolerance: a registered pair's answer must not
    take longer by even a fraction of a millisecond (it took 0.8-1.9 ms longer while the code
    was handed to the sender before the answer was sent).

    Each request opens its own connection, so requests spread over the workers as a stranger's
    would, and the figure is the request's own work rather than which worker a kept-alive
    connection happens to sit on."""
    from .test_multinode import Deployment

    dep = Deployment(tmp_path, fresh_database, redis_url)
    try:
        node = dep.start_node()
        client = dep.add_client()
        national_id, mobile = dep.add_citizen()
        cases = {"registered pair": (national_id, mobile),
                 "wrong mobile": (national_id, "+98935" + mobile[6:]),
                 "unknown national ID": (make_national_id("918273645"), mobile)}
        browsers = {name: node.flow() for name in cases}
        pages = {name: b.start(client[0], client[2]) for name, b in browsers.items()}
        forms = {name: (browsers[name].http, login_url(pages[name]), form_fields(pages[name].text)["csrf_token"])
                 for name in cases}

        def measure():
            timings = {name: [] for name in cases}
            order = [name for name in cases for _ in range(FINE_SAMPLES)]
            random.shuffle(order)
            for name in order:
                http, url, csrf = forms[name]
                nid, typed = cases[name]
                t0 = time.perf_counter()
                r = http.post(url, data={"csrf_token": csrf, "national_id": nid, "mobile": typed},
                              headers={"Connection": "close"}, allow_redirects=False, timeout=10)
                timings[name].append(time.perf_counter() - t0)
                assert r.status_code == 303, r.text[:300]
            return {k: statistics.median(v[WARMUP:]) for k, v in timings.items()}

        gaps = []
        for _ in range(3):  # a real difference shows in every run; a busy machine's noise does not
            medians = measure()
            base = min(medians.values())
            spread = max(medians.values()) - base
            if spread < max(FINE_TOLERANCE, 0.07 * base):
                break
            gaps.append(f"{spread * 1000:.2f} ms (" + ", ".join(f"{k} {v * 1000:.2f} ms" for k, v in medians.items())
                        + ")")
        else:
            raise AssertionError("timing differs: " + "; ".join(gaps))
        dep.outbox.settle()
        assert dep.outbox.messages(mobile), "codes did go out to the registered pair"
    finally:
        dep.stop()
        dep.forget_store_keys()


def test_same_answer_and_time_when_a_limit_is_hit(make_provider):
    provider = make_provider(limits={**GENEROUS_IP_LIMITS, "codes_per_national_id": "1/900"})
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    cases = {"registered pair": (national_id, mobile),
             "wrong mobile": (national_id, "+98935" + mobile[6:]),
             "unknown national ID": (make_national_id("918273645"), mobile)}
    bodies = _assert_same_time(lambda: _measure(provider, client, cases))
    assert len({(b[0], b[1], tuple(b[2])) for b in bodies.values()}) == 1
    assert all(b[0] == 429 for b in bodies.values())


def test_discovery_is_not_affected(make_provider):
    """An address that tried national IDs until the per-IP limit refused it still gets discovery
    and the signing keys, unchanged: the limits guard the login, not the metadata agencies need."""
    provider = make_provider(server={"proxy_hops": 1}, limits={**GENEROUS_IP_LIMITS, "starts_per_ip": "3/60"})
    client_id, _, redirect = provider.add_client()
    metadata = ("/.well-known/openid-configuration", "/jwks")
    before = {path: requests.get(provider.url + path, timeout=5).json() for path in metadata}
    browser = provider.flow()
    browser.http.headers["X-Forwarded-For"] = "10.9.0.1"
    page = browser.start(client_id, redirect)
    statuses = [browser.submit(page, {"national_id": make_national_id(f"9{i:08d}"), "mobile": "09121234567"}
                               ).status_code for i in range(5)]
    assert statuses == [303, 303, 303, 429, 429], statuses
    for path in metadata:
        r = browser.get(provider.url + path)
        assert r.status_code == 200, (path, r.status_code)
        assert r.json() == before[path], path
