"""A guardian acting for a child, in headless Chromium on a phone: the demo school agency (which
accepts guardians) sends the parent to the provider, the parent logs in by SMS, the chooser asks
for whom (Persian, right to left, no axe violations), the parent picks the child, and the agency
greets the child by name with the child's own pairwise `sub`; the ID token's `act` names the parent.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import zlib

import pytest

from ..helpers import mobile_e164, verify_id_token
from .conftest import LiveAgency
from .test_accessibility import axe_violations
from .test_login_pages import open_login


@pytest.fixture(scope="module")
def school(provider):
    live = LiveAgency(provider, accepts_guardians=True)
    yield live
    live.stop()


def test_a_parent_acts_for_a_child_at_the_school(new_context, provider, school, axe_script, shots):
    from idp.citizens.guardians import link, today
    from idp.citizens.models import CitizenRow
    from idp.platform.database import db
    from idp.protocol import clients
    from idp.protocol.subjects import subject_for

    parent_id, parent_mobile = provider.add_citizen(birth_date="1982-04-04")
    with provider.app.app_context():
        born = today() - dt.timedelta(days=9 * 366)
    child_id, _ = provider.add_citizen(birth_date=born.isoformat())
    with provider.app.app_context():
        db.session.execute(db.update(CitizenRow).where(CitizenRow.national_id == child_id)
                           .values(given_name="نیما", family_name="شهروند"))
        db.session.commit()
        link(parent_id, child_id)

    page = new_context(bypass_csp=True).new_page()  # bypass_csp: for the axe run only
    open_login(page, school, provider)
    page.fill("#national_id", parent_id)
    page.fill("#mobile", parent_mobile)
    sent = len(provider.outbox.messages(mobile_e164(parent_mobile)))
    page.click("button.primary")
    page.fill("#otp", provider.outbox.last_code(mobile_e164(parent_mobile), after=sent))
    page.click("form:first-of-type button[type=submit]")

    # the chooser: Persian first, the parent's own choice first, the child masked
    page.wait_for_selector("#as-self")
    assert "/acting-for" in page.url
    assert page.get_attribute("html", "lang") == "fa" and page.get_attribute("html", "dir") == "rtl"
    assert "وزارت آموزش و پرورش" in page.inner_text("h1")
    assert page.inner_text("#as-self") == "برای خودم ادامه می‌دهم"
    child_button = page.locator("button.acting-minor")
    assert child_button.count() == 1 and "نیما" in child_button.inner_text()
    assert child_id not in page.content()
    shots(page, "chooser")
    assert axe_violations(page, axe_script, "guardian-chooser") == []

    child_button.click()
    page.wait_for_url(school.url + "/")
    shots(page, "agency-as-child")
    assert "نیما شهروند، خوش آمدید" in page.inner_text("h2")
    with provider.app.app_context():
        from idp.citizens.directory import find

        client = clients.find(school.client_id)
        child_sub = subject_for(find(child_id).citizen, client)
        parent_sub = subject_for(find(parent_id).citizen, client)
    claims = page.inner_text("table.claims")
    assert child_sub in claims and parent_sub not in claims

    # the ID token the agency received (kept in its signed session cookie) names the parent as actor
    cookie = next(c["value"] for c in page.context.cookies() if c["name"] == f"agency_{school.port}_session")
    kept = _flask_session(cookie)
    verified = verify_id_token(provider.url, kept["id_token"])["claims"]
    assert verified["sub"] == child_sub and verified["act"] == {"sub": parent_sub}
    assert kept["userinfo"]["given_name"] == "نیما"


def _flask_session(cookie: str) -> dict:
    """The contents of a Flask session cookie (signed, not encrypted): ``[.]payload.time.signature``."""
    compressed = cookie.startswith(".")
    payload = cookie.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return json.loads(zlib.decompress(data) if compressed else data)
