"""Named limits through real Redis: per client IP, per national ID (+ mobile), per mobile, per
challenge; escalating cool-offs, never permanent; HMAC fingerprints as keys; audit events."""
from __future__ import annotations

import re

import redis
import requests

from .conftest import GENEROUS_IP_LIMITS
from .helpers import Clock, FlowClient, code_page, csrf_token, end_cooloffs


class Browser(FlowClient):
    """A browser behind its own client address (the provider trusts one proxy hop)."""

    def __init__(self, provider, ip: str):
        super().__init__(provider)
        self.http.headers["X-Forwarded-For"] = ip


def limited(make_provider, **limits):
    return make_provider(server={"proxy_hops": 1}, limits={**GENEROUS_IP_LIMITS, **limits})


def start_login(provider, browser, client, national_id, mobile):
    client_id, _, redirect = client
    page = browser.start(client_id, redirect)
    assert 'name="national_id"' in page.text
    return browser.submit(page, {"national_id": national_id, "mobile": mobile}), page


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_codes_per_national_id_and_the_same_for_an_unknown_pair(make_provider):
    provider = limited(make_provider, codes_per_national_id="3/900")
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    stranger_mobile = "+98935" + mobile[6:]
    for typed in (mobile, stranger_mobile):
        statuses = []
        for i in range(4):
            answer, _ = start_login(provider, Browser(provider, f"10.0.{len(typed)}.{i}"), client, national_id, typed)
            statuses.append(answer.status_code)
        assert statuses == [303, 303, 303, 429], typed
        assert int(answer.headers["Retry-After"]) > 800
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) == 3
    assert provider.outbox.messages(stranger_mobile) == []


def test_limit_pages_look_the_same_for_known_and_unknown_pairs(make_provider):
    provider = limited(make_provider, codes_per_national_id="1/900")
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    pages = []
    for typed in (mobile, "+98935" + mobile[6:]):
        start_login(provider, Browser(provider, "10.1.0.1"), client, national_id, typed)
        answer, _ = start_login(provider, Browser(provider, "10.1.0.2"), client, national_id, typed)
        assert answer.status_code == 429
        pages.append(re.sub(r"r=[A-Za-z0-9_\-]+|csrf_token[^>]*", "", answer.text))
    assert pages[0] == pages[1]


def test_per_ip_starts(make_provider):
    provider = limited(make_provider, starts_per_ip="3/60")
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.2.0.1")
    statuses = [start_login(provider, browser, client, national_id, mobile)[0].status_code for _ in range(4)]
    assert statuses == [303, 303, 303, 429]
    other = Browser(provider, "10.2.0.2")
    assert start_login(provider, other, client, national_id, mobile)[0].status_code == 303


def test_the_address_is_checked_before_the_pair_in_one_go(make_provider):
    """A start's limits are read in one store round trip (limits.check_start) and applied in
    order: a start refused for its address spends nothing of the pair's budget; one refused for
    the pair's budget still counts against its address."""
    provider = limited(make_provider, starts_per_ip="2/600", codes_per_national_id="3/900")
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    busy = Browser(provider, "10.9.0.1")
    statuses = [start_login(provider, busy, client, national_id, mobile)[0].status_code for _ in range(4)]
    assert statuses == [303, 303, 429, 429]  # the pair's budget spent twice, not four times
    other = Browser(provider, "10.9.0.2")
    statuses = [start_login(provider, other, client, national_id, mobile)[0].status_code for _ in range(2)]
    assert statuses == [303, 429]  # the pair's third start, then its limit
    someone_else = provider.add_citizen()
    assert start_login(provider, other, client, *someone_else)[0].status_code == 429  # the address: 2 of 2


def test_resend_waits_then_sends_a_new_code_for_the_same_challenge(make_provider, monkeypatch):
    import idp.login.codes

    clock = Clock(monkeypatch, idp.login.codes)
    provider = limited(make_provider, resend_after=2)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.3.0.1")
    page, first = code_page(provider, browser, client, (national_id, mobile))
    wait = re.search(r'data-seconds="(\d+)" data-enables="resend"', page.text)
    assert wait and 1 <= int(wait.group(1)) <= 2, "the page counts down to the resend"
    resend_url = f"{provider.url}/login/resend?{page.url.split('?')[1]}"
    too_soon = browser.http.post(resend_url, data={"csrf_token": csrf_token(page.text)}, allow_redirects=False,
                                 timeout=10)
    assert too_soon.status_code == 429 and 'id="resend-wait"' in too_soon.text
    assert len(provider.outbox.messages(mobile)) == 1
    clock.advance(2.1)
    again = browser.http.post(resend_url, data={"csrf_token": csrf_token(page.text)}, allow_redirects=False, timeout=10)
    assert again.status_code == 303
    second = provider.outbox.last_code(mobile, after=1)
    page = browser.follow(again, client[2])
    assert 'data-enables="resend"' in page.text, "the new code starts a new wait"
    if first != second:
        assert browser.submit(page, {"otp": first}).status_code == 400, "the replaced code no longer works"
        page = browser.get(page.url)
    done = browser.follow(browser.submit(page, {"otp": second}), client[2])
    assert done.is_redirect and done.headers["Location"].startswith(client[2])


def test_wrong_codes_escalate_cooloffs_and_a_right_code_clears_them(make_provider):
    provider = limited(make_provider, failures_before_cooloff=2, cooloff_seconds="1,2", max_consecutive_failures=50)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.4.0.1")
    page, code = code_page(provider, browser, client, (national_id, mobile))
    assert browser.submit(page, {"otp": wrong(code)}).status_code == 400
    cool = browser.submit(page, {"otp": wrong(code)})
    assert cool.status_code == 429 and cool.headers["Retry-After"] == "1"
    refused = browser.submit(page, {"otp": code})
    assert refused.status_code == 429, "no code is checked during a cool-off, not even the right one"
    assert end_cooloffs(provider) == 1
    assert browser.submit(page, {"otp": wrong(code)}).status_code == 400
    cool = browser.submit(page, {"otp": wrong(code)})
    assert cool.status_code == 429 and cool.headers["Retry-After"] == "2"
    assert end_cooloffs(provider) == 1
    # The challenge has 1 try left (4 wrong so far): the right code gets in and clears the run.
    done = browser.follow(browser.submit(page, {"otp": code}), client[2])
    assert done.is_redirect
    assert _redis(provider).get(f"{provider.settings.store.prefix}fail:{_pair(provider, national_id, mobile)}") is None


def test_failures_are_capped_per_citizen_but_not_forever(make_provider):
    provider = limited(make_provider, failures_before_cooloff=100, max_consecutive_failures=3, failure_memory=600)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.5.0.1")
    page, code = code_page(provider, browser, client, (national_id, mobile))
    browser.submit(page, {"otp": wrong(code)})
    browser.submit(page, {"otp": wrong(code)})
    capped = browser.submit(page, {"otp": wrong(code)})
    assert capped.status_code == 429 and 590 <= int(capped.headers["Retry-After"]) <= 600
    assert browser.submit(page, {"otp": code}).status_code == 429
    # A new login for the same pair is refused too, and says how long to wait.
    again, _ = start_login(provider, Browser(provider, "10.5.0.2"), client, national_id, mobile)
    assert again.status_code == 429
    ttl = _redis(provider).ttl(f"{provider.settings.store.prefix}cool:{_pair(provider, national_id, mobile)}")
    assert 0 < ttl <= 600, "the cap expires: never a permanent lock"


def test_a_stranger_with_a_wrong_mobile_cannot_lock_the_owner(make_provider):
    provider = limited(make_provider, failures_before_cooloff=2, cooloff_seconds="900")
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    stranger = Browser(provider, "10.6.0.1")
    page, _ = code_page(provider, stranger, client, (national_id, "+98935" + mobile[6:]), wait_for_code=False)
    stranger.submit(page, {"otp": "123456"})
    assert stranger.submit(page, {"otp": "123457"}).status_code == 429  # the stranger's pair cools off
    owner = Browser(provider, "10.6.0.2")
    page, code = code_page(provider, owner, client, (national_id, mobile))
    done = owner.follow(owner.submit(page, {"otp": code}), client[2])
    assert done.is_redirect, "the owner is not affected"


def _random_national_id() -> str:
    import secrets

    from idp.citizens.national_id import make_national_id

    return make_national_id(f"{secrets.randbelow(10**9):09d}")


def test_a_stranger_who_knows_only_the_mobile_cannot_spend_its_owners_budget(make_provider):
    """Hundreds of starts with random (valid) national IDs and the victim's mobile, asking for
    SMS and for the app: the owner's next start still sends a code (defaults: 20 per mobile a day)."""
    provider = limited(make_provider)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    stranger = Browser(provider, "10.8.0.1")
    page = stranger.start(client[0], client[2])
    for i in range(300):
        fields = {"national_id": _random_national_id(), "mobile": mobile}
        if i % 2:
            fields["method"] = "totp"
        answer = stranger.submit(page, fields)
        assert answer.status_code == 303, (i, answer.status_code)
    provider.outbox.settle()
    assert provider.outbox.messages(mobile) == [], "nothing was sent to the victim"
    for method in ("sms", "totp"):
        owner = Browser(provider, "10.8.0.2")
        page = owner.start(client[0], client[2])
        answer = owner.submit(page, {"national_id": national_id, "mobile": mobile,
                                     **({"method": "totp"} if method == "totp" else {})})
        assert answer.status_code == 303, (method, answer.status_code, answer.headers.get("Retry-After"))
    assert provider.outbox.last_code(mobile)


def test_the_mobile_budget_counts_codes_sent_and_says_the_same_to_everyone(make_provider):
    """Two citizens sharing a number spend its budget with codes really sent; then every start
    by SMS with that number is refused alike, registered or not, and the app still works."""
    provider = limited(make_provider, codes_per_mobile="2/86400")
    client = provider.add_client()
    first, mobile = provider.add_citizen()
    second, _ = provider.add_citizen(mobile=mobile)
    for nid in (first, second):
        assert start_login(provider, Browser(provider, "10.9.0.1"), client, nid, mobile)[0].status_code == 303
    assert provider.outbox.last_code(mobile, after=1)
    pages = []
    for nid in (first, _random_national_id()):
        answer, _ = start_login(provider, Browser(provider, "10.9.0.2"), client, nid, mobile)
        assert answer.status_code == 429 and int(answer.headers["Retry-After"]) > 86000
        pages.append((answer.headers["Retry-After"][:3],
                      re.sub(r"r=[A-Za-z0-9_\-]+|csrf_token[^>]*|\d+ (?:ساعت|hours?)", "", answer.text)))
    assert pages[0] == pages[1], "the refusal tells nothing about who is registered"
    browser = Browser(provider, "10.9.0.3")
    page = browser.start(client[0], client[2])
    answer = browser.submit(page, {"national_id": first, "mobile": mobile, "method": "totp"})
    assert answer.status_code == 303, "an app code sends nothing and spends nothing"
    provider.outbox.settle()
    assert len(provider.outbox.messages(mobile)) == 2


def test_early_resend_presses_cost_no_send_budget(make_provider):
    """A start and four presses of "send again" refused as too soon: one SMS, and the owner's
    next start is not refused (the default allows 5 codes per 15 minutes)."""
    provider = limited(make_provider)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.10.0.1")
    page, _ = code_page(provider, browser, client, (national_id, mobile))
    for _ in range(4):
        early = browser.http.post(f"{provider.url}/login/resend?{page.url.split('?')[1]}",
                                  data={"csrf_token": csrf_token(page.text)}, allow_redirects=False, timeout=10)
        assert early.status_code == 429 and "Retry-After" not in early.headers
    answer, _ = start_login(provider, Browser(provider, "10.10.0.2"), client, national_id, mobile)
    assert answer.status_code == 303, answer.headers.get("Retry-After")
    assert provider.outbox.last_code(mobile, after=1)
    assert len(provider.outbox.messages(mobile)) == 2


def test_limits_off_still_keeps_the_challenge_rules(make_provider):
    provider = make_provider(limits={"enabled": False, "codes_per_national_id": "1/900"})
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    for _ in range(3):
        page, code = code_page(provider, browser, client, (national_id, mobile))
    statuses = [browser.submit(page, {"otp": wrong(code)}).status_code for _ in range(5)]
    assert statuses == [400, 400, 400, 400, 429], "five wrong codes still end the challenge"


def test_store_keys_are_fingerprints_with_ttls_and_locks_are_audited(make_provider):
    provider = limited(make_provider, codes_per_national_id="1/900", failures_before_cooloff=2)
    client = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = Browser(provider, "10.7.0.1")
    page, code = code_page(provider, browser, client, (national_id, mobile))
    browser.submit(page, {"otp": wrong(code)})
    browser.submit(page, {"otp": wrong(code)})
    for _ in range(2):
        start_login(provider, Browser(provider, "10.7.0.2"), client, national_id, "+98935" + mobile[6:])
    r = _redis(provider)
    keys = list(r.scan_iter(match=provider.settings.store.prefix + "*"))
    assert keys
    for key in keys:
        assert national_id not in key and mobile[3:] not in key and "10.7.0" not in key, key
        assert r.ttl(key) > 0, f"{key} has no TTL"
    with provider.app.app_context():
        from idp.platform.audit import AuditEvent
        from idp.platform.database import db

        events = {e.event: e for e in db.session.execute(db.select(AuditEvent)).scalars()}
        assert {"login_started", "otp_wrong", "cooloff_started", "rate_limited"} <= set(events)
        for e in events.values():
            assert national_id not in str(e.details) and mobile not in str(e.details)
            assert e.subject_fp is None or len(e.subject_fp) == 32


def _redis(provider):
    return redis.Redis.from_url(provider.settings.store.url, decode_responses=True)


def _pair(provider, national_id, mobile):
    with provider.app.app_context():
        from idp.platform.audit import fingerprint

        return fingerprint("pair", f"{national_id}|{mobile}")


def test_health(make_provider):
    provider = make_provider()
    assert requests.get(f"{provider.url}/healthz", timeout=5).json() == {"status": "ok"}
