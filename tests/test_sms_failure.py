"""A dead or slow SMS gateway: a clear page, the challenge kept, and a retry that works."""
from __future__ import annotations

import threading

from .conftest import GENEROUS_IP_LIMITS
from .helpers import form_fields, redirect_params, wait_until


def test_failed_send_shows_a_page_and_the_challenge_survives_a_retry(make_provider, gateway):
    gateway.reply((500, {"error": "down"}))
    provider = make_provider(sms={"backend": "http", "http_provider": "webhook", "http_url": gateway.url + "/sms",
                                  "http_retries": 1, "http_timeout_ms": 500},
                             limits=GENEROUS_IP_LIMITS)
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    answer = browser.submit(page, {"national_id": national_id, "mobile": mobile})
    assert answer.status_code == 303
    code_url = answer.headers["Location"]
    assert wait_until(lambda: len(gateway.requests) >= 2, 5), "one try and one retry"
    failed = None
    for _ in range(40):
        failed = browser.get(provider.url + code_url if code_url.startswith("/") else code_url)
        if failed.status_code == 503:
            break
        threading.Event().wait(0.05)
    assert failed.status_code == 503 and 'name="otp"' not in failed.text
    assert "sms_unavailable" in failed.text
    # The gateway is back: resending at once (no wait after a failure) delivers a new code.
    gateway.reply((200, {"ok": True}))
    retry = browser.http.post(f"{provider.url}/login/resend?{code_url.split('?')[1]}",
                              data={"csrf_token": form_fields(page.text)["csrf_token"]}, allow_redirects=False,
                              timeout=10)
    assert retry.status_code == 303
    assert wait_until(lambda: any(b"\"code\"" in r["body"] for r in gateway.requests[2:]), 5)
    import json

    code = json.loads(gateway.requests[-1]["body"])["code"]
    page = browser.follow(retry, redirect)
    assert 'name="otp"' in page.text
    done = browser.follow(browser.submit(page, {"otp": code}), redirect)
    assert redirect_params(done, redirect)["code"]
