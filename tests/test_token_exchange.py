"""Token exchange between agencies (RFC 8693): agency A exchanges a citizen's access token for
one meant for agency B, as an operator's delegation allows; every exchange is audited and
counted; B's API accepts the token offline and sees who acted."""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from joserfc import jwt

from clients.agency_api import create_app as create_agency_api
from clients.jwt_verify import AccessTokenVerifier, actors

from .helpers import idp, mobile_e164

TX = "urn:ietf:params:oauth:grant-type:token-exchange"
AT = "urn:ietf:params:oauth:token-type:access_token"


def agency(provider, scope="openid profile phone", sector=None, **kw):
    """A confidential agency client with a pairwise sector of its own; (client_id, secret, redirect)."""
    sector = sector or f"{uuid.uuid4().hex[:8]}.gov.example"
    return provider.add_client(scope=scope, sector=sector, **kw)


def delegate(provider, source, target, scope):
    from idp.protocol import delegations

    with provider.app.app_context():
        delegations.add(source[0], target[0], scope)


def login(provider, client, scope="openid profile phone"):
    """A citizen signs in at ``client``; returns the token response and the citizen."""
    client_id, secret, redirect = client
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    code = browser.login(client_id, redirect, national_id, mobile, scope=scope)["code"]
    token = browser.exchange(client_id, secret, redirect, code)
    assert token.status_code == 200, token.text
    return token.json(), (national_id, mobile)


def exchange(provider, caller, subject_token, audience, auth=True, **extra):
    data = {"grant_type": TX, "subject_token": subject_token, "subject_token_type": AT, "audience": audience}
    data.update(extra)
    data = {k: v for k, v in data.items() if v is not None}
    return requests.post(f"{provider.url}/token", data=data, auth=(caller[0], caller[1]) if auth else None,
                         timeout=10)


def claims_of(provider, token, audience=None):
    """The token's claims as an agency API checks it: offline, against the published keys."""
    return AccessTokenVerifier(provider.url, audience=audience).verify(token)


def refused(response, error, status=400):
    assert response.status_code == status, response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    return body


def introspect(provider, client, token):
    return requests.post(f"{provider.url}/introspect", data={"token": token}, auth=(client[0], client[1]),
                         timeout=10).json()


def userinfo(provider, token):
    return requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture()
def pair(provider):
    """Agencies A and B (pairwise sectors of their own, B trusted) and a delegation A -> B."""
    a, b = agency(provider, scope="openid profile phone age"), agency(provider, scope="openid profile phone age")
    delegate(provider, a, b, "openid profile age")
    return a, b


def test_a_exchanges_a_citizens_token_for_one_meant_for_b(provider, pair):
    a, b = pair
    token, (national_id, _) = login(provider, a)
    original = claims_of(provider, token["access_token"], audience=a[0])
    r = exchange(provider, a, token["access_token"], b[0])
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}, body
    assert body["issued_token_type"] == AT and body["token_type"] == "Bearer"
    assert "refresh_token" not in body and "id_token" not in body
    claims = claims_of(provider, body["access_token"], audience=b[0])
    assert claims["aud"] == [b[0]] and claims["client_id"] == b[0]
    assert claims["act"] == {"sub": a[0]}
    # B sees the citizen under its own pairwise subject, not A's.
    assert claims["sub"] != original["sub"]
    # Scope: what the subject token and the delegation share (age was not granted to A; phone was
    # not delegated).
    assert claims["scope"] == body["scope"] == "openid profile"
    # The login it comes from: the same session, time and factors.
    for name in ("sid", "auth_time", "acr", "amr"):
        assert claims[name] == original[name], name
    # It expires no later than the subject token.
    assert claims["exp"] <= original["exp"] and 0 < body["expires_in"] <= original["exp"] - int(time.time()) + 1
    assert claims["jti"] != original["jti"]

    # B's introspection takes it as B's; A cannot introspect B's token.
    look = introspect(provider, b, body["access_token"])
    assert look["active"] is True and look["client_id"] == b[0] and look["sub"] == claims["sub"]
    assert look["act"] == {"sub": a[0]} and look["scope"] == "openid profile"
    assert introspect(provider, a, body["access_token"]) == {"active": False}
    # Userinfo gives B's view: B's sub, the profile claims, not the phone (outside the scope).
    info = userinfo(provider, body["access_token"])
    assert info.status_code == 200, info.text
    assert info.json()["sub"] == claims["sub"] and info.json()["given_name"] == "آزمون"
    assert "phone_number" not in info.json()
    # It is the sub B gets when the citizen signs in at B itself (B's sector), and A's is A's.
    with provider.app.app_context():
        from idp.citizens import directory
        from idp.protocol import clients
        from idp.protocol.subjects import subject_for

        citizen = directory.find(national_id).citizen
        assert claims["sub"] == subject_for(citizen, clients.find(b[0]))
        assert original["sub"] == subject_for(citizen, clients.find(a[0]))


def test_scope_narrows_and_never_widens(provider, pair):
    a, b = pair
    token, _ = login(provider, a, scope="openid profile age")
    r = exchange(provider, a, token["access_token"], b[0], scope="openid")
    assert r.status_code == 200, r.text
    assert claims_of(provider, r.json()["access_token"])["scope"] == "openid"
    assert r.json()["scope"] == "openid"
    full = exchange(provider, a, token["access_token"], b[0])
    assert full.json()["scope"] == "openid profile age"
    # phone: in the subject token's scope? no; in the delegation? no -> refused, not dropped.
    body = refused(exchange(provider, a, token["access_token"], b[0], scope="openid phone"), "invalid_scope")
    assert "phone" in body["error_description"]
    refused(exchange(provider, a, token["access_token"], b[0], scope="openid offline_access"), "invalid_scope")
    refused(exchange(provider, a, token["access_token"], b[0], scope="openid made_up"), "invalid_scope")
    # The delegation covers phone but the subject token does not: still refused.
    token2, _ = login(provider, a, scope="openid")
    refused(exchange(provider, a, token2["access_token"], b[0], scope="openid profile"), "invalid_scope")


def test_the_exchanged_token_lives_no_longer_than_the_subject_token(provider, pair):
    """A subject token with little time left: the new one expires with it."""
    a, b = pair
    token, _ = login(provider, a)
    subject = claims_of(provider, token["access_token"])
    with provider.app.app_context():
        from idp.platform.keyring import keyring

        key = keyring.signing_key(provider.settings.keys.access_token_alg)
        short = jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"},
                           {**subject, "exp": int(time.time()) + 90, "jti": uuid.uuid4().hex}, key.keyset)
        expired = jwt.encode({"alg": key.alg, "kid": key.kid, "typ": "at+jwt"},
                             {**subject, "exp": int(time.time()) - 5, "jti": uuid.uuid4().hex}, key.keyset)
    r = exchange(provider, a, short, b[0])
    assert r.status_code == 200, r.text
    assert claims_of(provider, r.json()["access_token"])["exp"] <= int(time.time()) + 90
    assert r.json()["expires_in"] <= 90
    body = refused(exchange(provider, a, expired, b[0]), "invalid_grant")
    assert "expired" in body["error_description"]


def test_nested_act_when_b_calls_c_with_the_exchanged_token(provider, pair):
    a, b = pair
    c = agency(provider)
    delegate(provider, b, c, "openid")
    token, _ = login(provider, a)
    for_b = exchange(provider, a, token["access_token"], b[0]).json()["access_token"]
    # B received it from A and calls C for the same citizen.
    r = exchange(provider, b, for_b, c[0])
    assert r.status_code == 200, r.text
    claims = claims_of(provider, r.json()["access_token"], audience=c[0])
    assert claims["act"] == {"sub": b[0], "act": {"sub": a[0]}}
    assert actors(claims) == [b[0], a[0]]
    assert claims["scope"] == "openid" and claims["client_id"] == c[0]
    assert claims["sub"] not in (claims_of(provider, for_b)["sub"], claims_of(provider, token["access_token"])["sub"])
    assert claims["sid"] == claims_of(provider, token["access_token"])["sid"]
    # A holds no delegation to C, and cannot present B's token as its own either.
    refused(exchange(provider, a, token["access_token"], c[0]), "invalid_target")
    delegate(provider, a, c, "openid")
    refused(exchange(provider, a, for_b, c[0]), "invalid_grant")


def test_without_a_delegation_or_a_fit_audience_the_target_is_invalid(provider, pair):
    a, b = pair
    token, _ = login(provider, a)
    stranger = agency(provider)
    refused(exchange(provider, a, token["access_token"], stranger[0]), "invalid_target")
    refused(exchange(provider, a, token["access_token"], "no-such-agency"), "invalid_target")
    refused(exchange(provider, a, token["access_token"], a[0]), "invalid_target")
    # The delegation only goes one way.
    back, _ = login(provider, b)
    refused(exchange(provider, b, back["access_token"], a[0]), "invalid_target")
    refused(exchange(provider, a, token["access_token"], b[0], resource="https://b.example/api"), "invalid_target")
    # A disabled audience is unknown.
    out = idp(provider, "clients", "disable", b[0])
    assert out.returncode == 0, out.stderr
    try:
        refused(exchange(provider, a, token["access_token"], b[0]), "invalid_target")
    finally:
        assert idp(provider, "clients", "enable", b[0]).returncode == 0
    assert exchange(provider, a, token["access_token"], b[0]).status_code == 200


def test_a_subject_token_that_is_not_a_live_access_token_of_the_caller_is_invalid_grant(provider, pair):
    a, b = pair
    token, _ = login(provider, a)
    # An ID token is signed by the same keys, but it is not an access token (typ JWT).
    body = refused(exchange(provider, a, token["id_token"], b[0]), "invalid_grant")
    assert "not an access token" in body["error_description"]
    # Another agency's token: C holds the same delegation to B, but this token is not C's.
    c = agency(provider)
    delegate(provider, c, b, "openid")
    refused(exchange(provider, c, token["access_token"], b[0]), "invalid_grant")
    # Garbage, a tampered token.
    refused(exchange(provider, a, "not.a.token", b[0]), "invalid_grant")
    head, payload, sig = token["access_token"].split(".")
    refused(exchange(provider, a, f"{head}.{payload}.{sig[:-4]}AAAA", b[0]), "invalid_grant")
    # Revoked by A (RFC 7009): refused.
    assert exchange(provider, a, token["access_token"], b[0]).status_code == 200
    requests.post(f"{provider.url}/revoke", data={"token": token["access_token"]}, auth=(a[0], a[1]), timeout=10)
    body = refused(exchange(provider, a, token["access_token"], b[0]), "invalid_grant")
    assert "revoked" in body["error_description"]


def test_a_subject_token_of_a_logged_out_session_is_refused_and_so_is_what_it_gave(provider, pair):
    a, b = pair
    token, _ = login(provider, a)
    for_b = exchange(provider, a, token["access_token"], b[0]).json()["access_token"]
    assert userinfo(provider, for_b).status_code == 200
    bye = requests.post(f"{provider.url}/logout", data={"id_token_hint": token["id_token"]}, allow_redirects=False,
                        timeout=10)
    assert bye.status_code in (200, 303), bye.text
    refused(exchange(provider, a, token["access_token"], b[0]), "invalid_grant")
    # The exchanged token belongs to the same session: it ends with it.
    assert userinfo(provider, for_b).status_code == 401
    assert introspect(provider, b, for_b) == {"active": False}


def test_bad_requests_and_public_clients(provider, pair):
    a, b = pair
    token, _ = login(provider, a)
    at = token["access_token"]
    refused(exchange(provider, a, None, b[0]), "invalid_request")
    refused(exchange(provider, a, at, None), "invalid_request")
    refused(exchange(provider, a, at, b[0], subject_token_type=None), "invalid_request")
    refused(exchange(provider, a, at, b[0], subject_token_type="urn:ietf:params:oauth:token-type:id_token"),
            "invalid_request")
    refused(exchange(provider, a, at, b[0], actor_token=at, actor_token_type=AT), "invalid_request")
    refused(exchange(provider, a, at, b[0], requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
            "invalid_request")
    # A repeated audience is a repeated parameter (RFC 6749 §3.2).
    repeated = [("grant_type", TX), ("subject_token", at), ("subject_token_type", AT), ("audience", b[0]),
                ("audience", a[0])]
    r = requests.post(f"{provider.url}/token", data=repeated, auth=(a[0], a[1]), timeout=10)
    refused(r, "invalid_request")
    # Client authentication: required, and a public client has none to give (RFC 6749 §5.2).
    refused(exchange(provider, (a[0], "wrong-secret"), at, b[0]), "invalid_client", 401)
    refused(exchange(provider, a, at, b[0], auth=False, client_id=a[0]), "invalid_client", 401)
    public = provider.add_client(public=True, scope="openid profile")
    refused(exchange(provider, public, at, b[0], auth=False, client_id=public[0]), "invalid_client", 401)
    # Still fine with the right credentials, by either secret method.
    r = requests.post(f"{provider.url}/token", data={"grant_type": TX, "subject_token": at, "subject_token_type": AT,
                                                     "audience": b[0], "client_id": a[0], "client_secret": a[1]},
                      timeout=10)
    assert r.status_code == 200, r.text


def test_the_guides_example_names_who_acted(provider, pair):
    """docs/agencies.md §8's snippet, as written, in B's API."""
    from pathlib import Path

    from .interop.test_agency_guide import the_block

    a, b = pair
    token, _ = login(provider, a)
    for_b = exchange(provider, a, token["access_token"], b[0]).json()["access_token"]
    b_own, _ = login(provider, b)
    example = the_block(Path(__file__).parent.parent / "docs" / "agencies.md", "python", "actors(claims)")
    verifier = AccessTokenVerifier(provider.url, audience=b[0])
    for presented, acting in ((for_b, [a[0]]), (b_own["access_token"], [])):
        run = {"verifier": verifier, "token": presented}
        exec(compile(example, "docs/agencies.md", "exec"), run)  # noqa: S102 - the documented example
        assert run["acting"] == acting


def test_discovery_advertises_the_exchange(provider):
    doc = requests.get(f"{provider.url}/.well-known/openid-configuration", timeout=10).json()
    assert TX in doc["grant_types_supported"]


def _metric(from_agency, to_agency, outcome):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("idp_token_exchanges_total", {"from_agency": from_agency,
                                                                   "to_agency": to_agency, "outcome": outcome}) or 0


def test_every_exchange_is_audited_and_counted_per_pair_and_day(provider, pair):
    a, b = pair
    token, (national_id, _) = login(provider, a)
    before = {o: _metric(a[0], b[0], o) for o in ("issued", "invalid_scope", "invalid_grant")}
    for _ in range(3):
        assert exchange(provider, a, token["access_token"], b[0]).status_code == 200
    refused(exchange(provider, a, token["access_token"], b[0], scope="phone"), "invalid_scope")
    refused(exchange(provider, a, token["id_token"], b[0]), "invalid_grant")
    refused(exchange(provider, a, token["access_token"], "no-such-agency"), "invalid_target")

    assert _metric(a[0], b[0], "issued") == before["issued"] + 3
    assert _metric(a[0], b[0], "invalid_scope") == before["invalid_scope"] + 1
    assert _metric(a[0], b[0], "invalid_grant") == before["invalid_grant"] + 1
    assert _metric(a[0], "-", "invalid_target") >= 1

    out = idp(provider, "audit", "tail", "-n", "500", "--json")
    assert out.returncode == 0, out.stderr
    import json

    from idp.platform.audit import fingerprint

    with provider.app.app_context():
        fp = fingerprint("nid", national_id)
    mine = [e for e in json.loads(out.stdout) if e["client_id"] == a[0] and e["event"].startswith("token_exchange")]
    issued = [e for e in mine if e["event"] == "token_exchanged"]
    assert len(issued) == 3 and all(e["details"]["to"] == b[0] and e["subject_fp"] == fp for e in issued)
    assert issued[0]["details"]["scope"] == "openid profile" and issued[0]["details"]["actors"] == 1
    errors = sorted(e["details"]["error"] for e in mine if e["event"] == "token_exchange_refused")
    assert errors == ["invalid_grant", "invalid_scope", "invalid_target"]
    assert national_id not in out.stdout

    out = idp(provider, "stats", "--by", "agency-pair", "--agency", a[0], "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    rows = {(r["from"], r["to"]): r for r in report["rows"]}
    assert (rows[(a[0], b[0])]["issued"], rows[(a[0], b[0])]["refused"]) == (3, 2)
    assert (rows[(a[0], "-")]["issued"], rows[(a[0], "-")]["refused"]) == (0, 1)
    assert rows[(a[0], b[0])]["period"] == report["to"]
    text = idp(provider, "stats", "--by", "agency-pair", "--agency", a[0])
    assert text.returncode == 0 and a[0] in text.stdout and b[0] in text.stdout, text.stderr
    csv = idp(provider, "stats", "--by", "agency-pair", "--agency", a[0], "--csv")
    assert csv.stdout.splitlines()[0] == "period,label,label_fa,from,to,issued,refused"
    assert f",{a[0]},{b[0]},3,2" in csv.stdout
    bad = idp(provider, "stats", "--by", "agency-pair", "--plot", "/tmp/x.png")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_delegations_commands(provider):
    import json

    a, b = agency(provider), agency(provider, allow_national_id=True, scope="openid profile national_id")
    untrusted = agency(provider, trusted=False)
    public = provider.add_client(public=True)

    out = idp(provider, "delegations", "add", "--from", a[0], "--to", b[0], "--scope", "profile openid", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["from"], data["to"], data["scope"], data["created"]) == (a[0], b[0], "openid profile", True)
    out = idp(provider, "delegations", "add", "--from", a[0], "--to", b[0], "--scope", "openid national_id")
    assert out.returncode == 0 and "changed" in out.stdout, out.stderr
    listed = json.loads(idp(provider, "delegations", "list", "--json").stdout)
    assert {"from": a[0], "to": b[0], "scope": "openid national_id"}.items() <= \
        next(d for d in listed if d["from"] == a[0]).items()
    assert f"{a[0]} -> {b[0]}" in idp(provider, "delegations", "list").stdout

    # The running provider follows at once: A may now call B.
    token, _ = login(provider, a, scope="openid profile")
    assert exchange(provider, a, token["access_token"], b[0]).json()["scope"] == "openid"

    for args, says in (
        (["--from", a[0], "--to", "nobody", "--scope", "openid"], "no such client"),
        (["--from", a[0], "--to", a[0], "--scope", "openid"], "same agency"),
        (["--from", a[0], "--to", b[0], "--scope", "openid shoe_size"], "not offered"),
        (["--from", a[0], "--to", b[0], "--scope", "openid offline_access"], "refresh token"),
        (["--from", b[0], "--to", a[0], "--scope", "openid national_id"], "not allowed the national ID"),
        (["--from", b[0], "--to", a[0], "--scope", "openid age"], "not registered for age"),
        (["--from", a[0], "--to", b[0], "--scope", ""], "at least one"),
        (["--from", public[0], "--to", b[0], "--scope", "openid"], "public client"),
        (["--from", a[0], "--to", untrusted[0], "--scope", "openid"], "not a trusted agency"),
    ):
        out = idp(provider, "delegations", "add", *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("idp: ") and out.stderr.count("\n") == 1 and says in out.stderr, out.stderr

    out = idp(provider, "delegations", "remove", "--from", a[0], "--to", b[0], "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"] is True, out.stderr
    refused(exchange(provider, a, token["access_token"], b[0]), "invalid_target")
    out = idp(provider, "delegations", "remove", "--from", a[0], "--to", b[0])
    assert out.returncode == 1 and "no delegation" in out.stderr and out.stderr.count("\n") == 1
    events = [e["event"] for e in json.loads(idp(provider, "audit", "tail", "-n", "200", "--json").stdout)
              if e["client_id"] == a[0]]
    assert {"delegation_added", "delegation_changed", "delegation_removed"} <= set(events)


def test_end_to_end_agency_a_logs_in_exchanges_and_b_api_accepts_offline(provider, monkeypatch):
    """The demo agency web app A signs a citizen in through the browser; A exchanges the access
    token it got for one meant for agency B; B's API (clients/agency_api) accepts it offline and
    sees that A acted."""
    import re

    from clients.agency_web import views as agency_views

    from .helpers import LiveAgency
    from .test_demo_agencies import click_login, open_page, submit

    seen = {}
    real = agency_views.verified_id_claims

    def spy(token):
        seen[agency_views.settings().client_id] = dict(token)
        return real(token)

    monkeypatch.setattr(agency_views, "verified_id_claims", spy)
    first = LiveAgency(provider, "report-card", "Ministry of Education: report cards")
    b = agency(provider, scope="openid profile")
    try:
        out = idp(provider, "delegations", "add", "--from", first.client_id, "--to", b[0], "--scope", "openid profile")
        assert out.returncode == 0, out.stderr
        national_id, mobile = provider.add_citizen()
        to = mobile_e164(mobile)
        browser = requests.Session()
        page = click_login(browser, open_page(browser, first.url + "/"))
        page = submit(browser, page, {"national_id": national_id, "mobile": "0" + to[3:]})
        page = submit(browser, page, {"otp": provider.outbox.last_code(to)})
        assert page.status_code == 200 and page.url == first.url + "/", page.text[:300]
        sub_a = re.search(r"<th>sub</th>\s*<td>(.*?)</td>", page.text, re.S).group(1).strip()
    finally:
        first.stop()
    access_token = seen[first.client_id]["access_token"]

    r = exchange(provider, (first.client_id, first.secret), access_token, b[0])
    assert r.status_code == 200, r.text
    api = create_agency_api({"AGENCY_ISSUER": provider.url, "AGENCY_API_AUDIENCE": b[0]}).test_client()
    me = api.get("/api/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.status_code == 200, (me.headers.get("WWW-Authenticate"), me.get_data(True))
    body = me.get_json()
    assert body["client_id"] == b[0] and body["act"] == {"sub": first.client_id}
    assert body["actors"] == [first.client_id] and body["sub"] != sub_a
    assert body["acr"] == "urn:idp:acr:sms" and body["scope"] == "openid profile"
    # A's own token is not for B's API, and the exchanged token is not for A's.
    assert api.get("/api/me", headers={"Authorization": f"Bearer {access_token}"}).status_code == 401
    a_api = create_agency_api({"AGENCY_ISSUER": provider.url, "AGENCY_API_AUDIENCE": first.client_id}).test_client()
    assert a_api.get("/api/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).status_code == 401
