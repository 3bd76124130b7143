"""Every login start, code sent, wrong code, lock and success is an audit event with
fingerprints instead of identifiers, and `idp audit tail` shows them."""
from __future__ import annotations

import json

from .helpers import idp, wait_until


def test_a_login_leaves_a_trail_without_identifiers(provider):
    client_id, secret, redirect = provider.add_client()
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = provider.outbox.last_code(mobile)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    page = browser.submit(page, {"otp": wrong})
    browser.follow(browser.submit(page, {"otp": code}), redirect)

    def events():
        out = idp(provider, "audit", "tail", "-n", "50", "--json", timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def code_sent() -> bool:  # the sender thread records it after the answer
        return "code_sent" in {r["event"] for r in events()}

    assert wait_until(code_sent, 10)
    mine = [r for r in events() if r["client_id"] == client_id or r["event"] == "code_sent"]
    kinds = [r["event"] for r in mine]
    for expected in ("login_started", "otp_wrong", "login_succeeded", "code_sent"):
        assert expected in kinds, kinds
    text = json.dumps(mine, ensure_ascii=False)
    assert national_id not in text and mobile not in text and mobile[3:] not in text
    started = next(r for r in mine if r["event"] == "login_started")
    assert started["details"]["code_to"] == "0" + mobile[3:6] + "***" + mobile[-4:]
    assert started["subject_fp"] and started["ip_fp"]
    ids = [r["id"] for r in events()]
    assert ids == sorted(ids), "oldest first"
