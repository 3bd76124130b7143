"""A guardian acting for a minor: the registry's links (`idp citizens link-guardian`, the import's
guardian_national_id column), the chooser after the guardian's own login at agencies that accept
guardians, tokens whose `sub` is the minor and whose `act` names the guardian, counting (the
guardian only), the audit trail (both), and the end of it all on the minor's 18th birthday.

Birth dates make the 18th birthday deterministic: a minor born 18 years before today is of age
today, one born 18 years before tomorrow is still a minor. "The day has passed" is the registry
correcting the birth date to 18 years ago today (what a day passing does to may_act's answer).
"""
from __future__ import annotations

import datetime as dt
import json
import re
import time
from html import unescape

import requests

from idp.platform.digits import ascii_digits

from .helpers import idp, mobile_e164, redirect_params, verify_id_token

CHOICE = re.compile(r'<button[^>]*name="as" value="([^"]+)"[^>]*>(.*?)</button>', re.S)


# ---- helpers -----------------------------------------------------------------------------------

def _today(provider) -> dt.date:
    with provider.app.app_context():
        from idp.citizens.guardians import today

        return today()


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _born(provider, years: int, days_later: int = 0) -> str:
    """The birth date of someone who turns ``years`` on today + ``days_later``."""
    return _years_before(_today(provider) + dt.timedelta(days=days_later), years).isoformat()


def _citizen(provider, national_id: str):
    with provider.app.app_context():
        from idp.citizens.directory import find

        return find(national_id).citizen


def _link_in_db(provider, guardian: str, minor: str) -> None:
    """A link as it stands in the registry (made earlier, when the minor was younger)."""
    with provider.app.app_context():
        from idp.citizens.models import GuardianLink
        from idp.platform.database import db

        db.session.add(GuardianLink(guardian_id=_citizen(provider, guardian).id, minor_id=_citizen(provider, minor).id))
        db.session.commit()


def _set_birth_date(provider, national_id: str, birth_date: str) -> None:
    with provider.app.app_context():
        from idp.citizens.models import CitizenRow
        from idp.platform.database import db

        row = db.session.execute(db.select(CitizenRow).filter_by(national_id=national_id)).scalar_one()
        row.birth_date = dt.date.fromisoformat(birth_date)
        db.session.commit()


def _add_child(provider, given_name: str, birth_date: str) -> tuple[str, str]:
    national_id, mobile = provider.add_citizen(birth_date=birth_date)
    with provider.app.app_context():
        from idp.citizens.models import CitizenRow
        from idp.platform.database import db

        db.session.execute(db.update(CitizenRow).where(CitizenRow.national_id == national_id)
                           .values(given_name=given_name))
        db.session.commit()
    return national_id, mobile


def _family(provider):
    """A guardian (adult) linked by the command line to a child of 10 and to a teenager who turns
    18 tomorrow."""
    guardian = provider.add_citizen(birth_date="1980-02-02")
    child = _add_child(provider, "سارا", _born(provider, 10))
    teen = _add_child(provider, "Reza", _born(provider, 18, days_later=1))
    for minor in (child, teen):
        out = idp(provider, "citizens", "link-guardian", "--guardian", guardian[0], "--minor", minor[0])
        assert out.returncode == 0, out.stderr
    return guardian, child, teen


def _sign_in(provider, browser, client, national_id: str, mobile: str, **extra) -> requests.Response:
    """The guardian's own login by SMS; the answer after the code: a redirect to the client, or a page."""
    client_id, _, redirect = client
    page = browser.start(client_id, redirect, **extra)
    if page.is_redirect:
        return page  # single sign-on
    assert 'name="national_id"' in page.text, page.text[:300]
    sent = len(provider.outbox.messages(mobile_e164(mobile)))
    page = browser.follow(browser.submit(page, {"national_id": national_id, "mobile": mobile}), redirect)
    code = provider.outbox.last_code(mobile_e164(mobile), after=sent)
    return browser.follow(browser.submit(page, {"otp": code}), redirect)


def _choices(page: requests.Response) -> dict[str, str]:
    """The chooser's buttons: text -> value."""
    return {" ".join(unescape(re.sub(r"<[^>]+>", "", text)).split()): value for value, text in CHOICE.findall(page.text)}


def _choose(browser, page, value: str, redirect: str) -> dict[str, str]:
    return redirect_params(browser.follow(browser.submit(page, {"as": value}), redirect), redirect)


def _decode(provider, token: str) -> dict:
    return verify_id_token(provider.url, token)["claims"]


def _sub(provider, national_id: str, client_id: str) -> str:
    with provider.app.app_context():
        from idp.protocol import clients
        from idp.protocol.subjects import subject_for

        return subject_for(_citizen(provider, national_id), clients.find(client_id))


def _auth_events(provider, national_id: str) -> list[tuple[str, bool]]:
    with provider.app.app_context():
        from idp.citizens.models import AuthEvent
        from idp.platform.database import db

        rows = db.session.execute(db.select(AuthEvent.client_id, AuthEvent.sso)
                                  .where(AuthEvent.citizen_id == _citizen(provider, national_id).id)
                                  .order_by(AuthEvent.id)).all()
        return [tuple(r) for r in rows]


def _audit(provider, event: str) -> list[dict]:
    with provider.app.app_context():
        from idp.platform.audit import latest

        return latest(500, event)


def _fp(provider, national_id: str) -> str:
    with provider.app.app_context():
        from idp.platform.audit import fingerprint

        return fingerprint("nid", national_id)


# ---- the registry: the command line ------------------------------------------------------------

def test_link_and_unlink_guardian_on_the_command_line(provider):
    guardian = provider.add_citizen(birth_date="1979-03-03")
    child = provider.add_citizen(birth_date=_born(provider, 7))
    adult = provider.add_citizen(birth_date=_born(provider, 18))  # 18 today

    out = idp(provider, "citizens", "link-guardian", "--guardian", guardian[0], "--minor", child[0], "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"guardian": guardian[0], "minor": child[0],
                                      "minor_birth_date": _born(provider, 7), "linked": True}
    out = idp(provider, "citizens", "link-guardian", "--guardian", guardian[0], "--minor", child[0])
    assert (out.returncode, out.stdout) == (0, f"already linked: {guardian[0]} to {child[0]}\n")

    unknown = "0012345679" if guardian[0] != "0012345679" else "0000000019"
    for args, line in [
        (("--guardian", unknown, "--minor", child[0]), f"idp: --guardian: no citizen is registered with national ID "
                                                       f"{unknown}"),
        (("--guardian", guardian[0], "--minor", "1234567890"), "idp: --minor: "),
        (("--guardian", guardian[0], "--minor", adult[0]), f"idp: --minor: {adult[0]} is 18 or older"),
        (("--guardian", child[0], "--minor", child[0]), "idp: --guardian and --minor name the same citizen"),
    ]:
        out = idp(provider, "citizens", "link-guardian", *args)
        assert out.returncode == 1 and out.stdout == "", (args, out.stdout, out.stderr)
        assert out.stderr.startswith(line) and out.stderr.count("\n") == 1, (args, out.stderr)

    linked = _audit(provider, "guardian_linked")
    assert [(e["subject_fp"], e["details"]["minor_fp"]) for e in linked][-1:] == \
        [(_fp(provider, guardian[0]), _fp(provider, child[0]))]
    assert child[0] not in json.dumps(linked), "fingerprints only"

    out = idp(provider, "citizens", "unlink-guardian", "--guardian", guardian[0], "--minor", child[0], "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"] is True, out.stderr
    out = idp(provider, "citizens", "unlink-guardian", "--guardian", guardian[0], "--minor", child[0])
    assert out.returncode == 0 and out.stdout.startswith("not linked:"), out.stdout
    assert _audit(provider, "guardian_unlinked")[-1]["subject_fp"] == _fp(provider, guardian[0])
    with provider.app.app_context():
        from idp.citizens.guardians import minors_of

        assert minors_of(_citizen(provider, guardian[0]).id) == []


# ---- the registry: imports ---------------------------------------------------------------------

def test_import_links_guardians_and_rejects_unknown_ones(provider, tmp_path):
    from idp.citizens.national_id import make_national_id

    from .test_registry_import import new_id

    with provider.app.app_context():
        from idp.citizens.guardians import minors_of
        from idp.citizens.importer import import_file

        existing = provider.add_citizen(birth_date="1975-01-01")[0]
        parent, kid, stranger_kid, grown, lone = new_id(), new_id(), new_id(), new_id(), new_id()
        unknown = make_national_id("999999998")
        child_born, grown_born = _born(provider, 9), _born(provider, 18)
        f = tmp_path / "registry.csv"
        f.write_text("national_id,mobile,birth_date,guardian_national_id\n"
                     f"{parent},09121110000,1980-01-01,\n"                      # a new guardian in the same file
                     f"{kid},09121110001,{child_born},{parent}; {existing}\n"   # two guardians
                     f"{stranger_kid},09121110002,{child_born},{unknown}\n"     # an unknown guardian: rejected
                     f"{grown},09121110003,{grown_born},{parent}\n"             # 18 today: rejected
                     f"{lone},09121110004,{child_born},{lone}\n",               # their own guardian: rejected
                     encoding="utf-8")
        r = import_file(f)
        assert (r.inserted, r.rejected, r.guardian_links) == (2, 3, 2), r.as_dict()
        assert [(x["line"], x["reason"]) for x in r.rejections] == [
            (4, f"guardian_national_id: no citizen is registered with national ID {unknown}"),
            (5, "guardian_national_id: the citizen is 18 or older (a guardian acts only for a minor)"),
            (6, "guardian_national_id: names the row's own citizen (nobody is their own guardian)"),
        ]
        assert "guardian_national_id" in r.columns
        from idp.citizens.directory import find

        assert find(stranger_kid) is None, "a rejected row loads nothing"
        for guardian in (parent, existing):
            assert [m.citizen.id for m in minors_of(find(guardian).citizen.id)] == [find(kid).citizen.id]

        # the column is the minor's whole list: an empty value removes their links (JSON lines too)
        g = tmp_path / "again.jsonl"
        g.write_text(json.dumps({"national_id": kid, "guardian_national_id": existing}) + "\n"
                     + json.dumps({"national_id": parent, "given_name": "Parent"}) + "\n", encoding="utf-8")
        assert import_file(g).rejected == 0
        assert minors_of(find(parent).citizen.id) == [] and len(minors_of(find(existing).citizen.id)) == 1
        h = tmp_path / "clear.csv"
        h.write_text(f"national_id,guardian_national_id\n{kid},\n", encoding="utf-8")
        assert import_file(h).guardian_links == 0
        assert minors_of(find(existing).citizen.id) == []
        assert _audit(provider, "registry_imported")[-1]["details"]["guardian_links"] == 0


# ---- the chooser -------------------------------------------------------------------------------

def test_the_chooser_appears_only_at_accepting_agencies_for_guardians_of_minors(provider):
    guardian, child, teen = _family(provider)
    grown = _add_child(provider, "Grown", _born(provider, 18))  # 18 today: linked before, no longer offered
    _link_in_db(provider, guardian[0], grown[0])
    school = provider.add_client(name="School", accepts_guardians=True)
    tax = provider.add_client(name="Tax")

    # an agency that does not accept guardians: the guardian's own code, as ever
    browser = provider.flow()
    params = redirect_params(_sign_in(provider, browser, tax, *guardian), tax[2])
    assert "code" in params
    # the same browser (single sign-on) at an accepting agency: the chooser
    page = browser.follow(browser.get(browser.authorize_url(school[0], school[2])), school[2])
    assert page.status_code == 200 and "acting-for" in page.url, page.text[:300]
    choices = _choices(page)
    assert list(choices.values())[0] == "self" and list(choices)[0] == "برای خودم ادامه می‌دهم"
    offered = ascii_digits(" ".join(choices))
    assert "سارا" in offered and "Reza" in offered and "Grown" not in offered
    assert f"*******{child[0][-3:]}" in offered and child[0] not in ascii_digits(page.text), "masked national IDs"
    assert len(choices) == 3
    # "as yourself": the guardian's own code
    params = _choose(browser, page, "self", school[2])
    token = browser.exchange(school[0], school[1], school[2], params["code"]).json()
    claims = _decode(provider, token["id_token"])
    assert claims["sub"] == _sub(provider, guardian[0], school[0]) and "act" not in claims

    # a citizen with no linked minor never sees it; nor does a stranger before logging in
    plain = provider.add_citizen()
    assert "code" in redirect_params(_sign_in(provider, provider.flow(), school, *plain), school[2])
    first = provider.flow().start(school[0], school[2])
    assert 'name="national_id"' in first.text and "acting" not in first.text

    # prompt=none cannot show a page: the guardian goes on as themselves
    params = redirect_params(browser.get(browser.authorize_url(school[0], school[2], prompt="none")), school[2])
    claims = _decode(provider, browser.exchange(school[0], school[1], school[2], params["code"]).json()["id_token"])
    assert claims["sub"] == _sub(provider, guardian[0], school[0])

    # a forged or stale choice is the "start again" page, never a token
    page = browser.follow(browser.get(browser.authorize_url(school[0], school[2])), school[2])
    forged = browser.submit(page, {"as": "0" * 32})
    assert forged.status_code in (400, 410) and "code=" not in forged.headers.get("Location", "")
    # and the POST is CSRF-protected
    page = browser.follow(browser.get(browser.authorize_url(school[0], school[2])), school[2])
    value = _choices(page)[next(k for k in _choices(page) if "Reza" in k)]
    bare = browser.http.post(page.url, data={"as": value}, allow_redirects=False, timeout=10)
    assert bare.status_code == 400 and "code=" not in bare.headers.get("Location", "")


def test_acting_for_a_child(provider):
    guardian, child, _ = _family(provider)
    school = provider.add_client(name="School", accepts_guardians=True, scope="openid profile offline_access")
    guardian_events, child_events = len(_auth_events(provider, guardian[0])), len(_auth_events(provider, child[0]))
    acted = len(_audit(provider, "guardian_acted"))

    browser = provider.flow()
    page = _sign_in(provider, browser, school, *guardian, scope="openid profile offline_access")
    value = next(v for k, v in _choices(page).items() if "سارا" in k)
    params = _choose(browser, page, value, school[2])
    response = browser.exchange(school[0], school[1], school[2], params["code"])
    assert response.status_code == 200, response.text
    token = response.json()
    assert "refresh_token" not in token, "no refresh token for a guardian's grant, even with offline_access"

    child_sub, guardian_sub = _sub(provider, child[0], school[0]), _sub(provider, guardian[0], school[0])
    assert child_sub != guardian_sub
    id_claims, at_claims = _decode(provider, token["id_token"]), _decode(provider, token["access_token"])
    from idp.protocol.discovery import ACR, AMR

    for claims in (id_claims, at_claims):
        assert claims["sub"] == child_sub
        assert claims["act"] == {"sub": guardian_sub}
        # the guardian's login: by SMS, a moment ago
        assert (claims["acr"], claims["amr"]) == (ACR["sms"], AMR["sms"])
        assert 0 <= time.time() - claims["auth_time"] < 120
    assert id_claims["auth_time"] == at_claims["auth_time"]
    assert "idp_act_ref" not in id_claims

    # userinfo answers the child's claims, with act
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10)
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == child_sub and info.json()["given_name"] == "سارا"
    assert info.json()["act"] == {"sub": guardian_sub}
    # introspection shows act too
    seen = requests.post(f"{provider.url}/introspect", data={"token": token["access_token"]},
                         auth=(school[0], school[1]), timeout=10).json()
    assert seen["active"] and seen["sub"] == child_sub and seen["act"] == {"sub": guardian_sub}

    # counting: the guardian authenticated (once), the child did not
    assert len(_auth_events(provider, guardian[0])) == guardian_events + 1
    assert len(_auth_events(provider, child[0])) == child_events
    # audit: the code and the token, each with both fingerprints
    new = _audit(provider, "guardian_acted")[acted:]
    assert [(e["details"]["step"], e["subject_fp"], e["details"]["minor_fp"], e["client_id"]) for e in new] == [
        ("code", _fp(provider, guardian[0]), _fp(provider, child[0]), school[0]),
        ("token", _fp(provider, guardian[0]), _fp(provider, child[0]), school[0])]

    # at an agency that asks for consent, the guardian answers for the child, and the page says so
    clinic = provider.add_client(name="Clinic", accepts_guardians=True, trusted=False, scope="openid profile")
    page = browser.follow(browser.get(browser.authorize_url(clinic[0], clinic[2])), clinic[2])
    value = next(v for k, v in _choices(page).items() if "سارا" in k)
    consent_page = browser.follow(browser.submit(page, {"as": value}), clinic[2])
    assert 'id="for-child"' in consent_page.text, consent_page.text[:400]
    for_child = consent_page.text[consent_page.text.index('id="for-child"'):]
    for_child = ascii_digits(unescape(for_child[:for_child.index("</p>")]))
    assert "سارا" in for_child and f"*******{child[0][-3:]}" in for_child and child[0] not in for_child
    own = browser.follow(browser.get(browser.authorize_url(clinic[0], clinic[2])), clinic[2])
    own = browser.follow(browser.submit(own, {"as": "self"}), clinic[2])
    assert 'name="decision"' in own.text and 'id="for-child"' not in own.text, "answering for oneself"

    # the guardian's token cannot be exchanged for another agency's (the guardian's sub would travel)
    other = provider.add_client(name="Other")
    exchanged = requests.post(f"{provider.url}/token", auth=(school[0], school[1]), timeout=10, data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": token["access_token"],
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": other[0]})
    assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant", exchanged.text

    # the guardian's own record says what they did for which child, at which agency
    record = browser.get(f"{provider.url}/account/record")
    assert record.status_code == 200 and 'id="guardian-actions"' in record.text, record.text[:300]
    section = record.text[record.text.index('id="guardian-actions"'):]
    section = section[:section.index("</ol>")]
    items = re.findall(r"<li>(.*?)</li>", section, re.S)
    assert len(items) == 1, items  # one use (its code and token steps are one entry)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", items[0])).split())
    assert "سارا" in text and "School" in text and child[0][-3:] in ascii_digits(text) and child[0] not in text


def test_it_ends_on_the_18th_birthday(provider):
    guardian, child, teen = _family(provider)
    school = provider.add_client(name="School", accepts_guardians=True)
    refused = len(_audit(provider, "guardian_act_refused"))

    # the teenager turns 18 tomorrow: offered today; a code is issued for them
    browser = provider.flow()
    page = _sign_in(provider, browser, school, *guardian)
    params = _choose(browser, page, next(v for k, v in _choices(page).items() if "Reza" in k), school[2])
    # ... and a token, before midnight
    other = provider.flow()
    page = _sign_in(provider, other, school, *guardian)
    early = _choose(other, page, next(v for k, v in _choices(page).items() if "Reza" in k), school[2])
    token = other.exchange(school[0], school[1], school[2], early["code"]).json()
    assert _decode(provider, token["access_token"])["sub"] == _sub(provider, teen[0], school[0])

    # the day passes: the teenager is 18 today
    _set_birth_date(provider, teen[0], _born(provider, 18))

    # the code issued the day before is refused at the token endpoint, audited for both
    response = browser.exchange(school[0], school[1], school[2], params["code"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
    new = _audit(provider, "guardian_act_refused")[refused:]
    assert [(e["details"]["step"], e["subject_fp"], e["details"]["minor_fp"]) for e in new] == \
        [("token", _fp(provider, guardian[0]), _fp(provider, teen[0]))]
    # userinfo no longer answers for them with the guardian's token
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token['access_token']}"},
                        timeout=10)
    assert info.status_code == 401 and info.json()["error"] == "invalid_token"

    # the chooser no longer offers them; the younger child still is
    page = browser.follow(browser.get(browser.authorize_url(school[0], school[2])), school[2])
    offered = " ".join(_choices(page))
    assert "Reza" not in offered and "سارا" in offered
    # a chooser shown before midnight and answered after: the choice is refused, no code
    _set_birth_date(provider, child[0], _born(provider, 18))
    late = browser.submit(page, {"as": next(v for k, v in _choices(page).items() if "سارا" in k)})
    assert "code=" not in late.headers.get("Location", "")
    # with no minor left, no chooser at all
    params = redirect_params(browser.get(browser.authorize_url(school[0], school[2])), school[2])
    claims = _decode(provider, browser.exchange(school[0], school[1], school[2], params["code"]).json()["id_token"])
    assert claims["sub"] == _sub(provider, guardian[0], school[0]) and "act" not in claims


def test_an_unlinked_guardian_code_is_refused(provider):
    guardian, child, _ = _family(provider)
    school = provider.add_client(name="School", accepts_guardians=True)
    browser = provider.flow()
    page = _sign_in(provider, browser, school, *guardian)
    params = _choose(browser, page, next(v for k, v in _choices(page).items() if "سارا" in k), school[2])
    assert idp(provider, "citizens", "unlink-guardian", "--guardian", guardian[0], "--minor", child[0]).returncode == 0
    response = browser.exchange(school[0], school[1], school[2], params["code"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
