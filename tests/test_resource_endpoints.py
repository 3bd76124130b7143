"""UserInfo and introspection answered before Flask's dispatch (endpoints.ResourceEndpoints):
for every request the fast path takes, the same answer as the views give the same request in a
shape that goes through Flask; and the requests it must leave to the views do reach them."""
from __future__ import annotations

import requests

from idp.platform.web import SECURITY_HEADERS

#: What the two ways of answering must agree on, besides the status and the JSON body.
HEADERS = ("Content-Type", "Cache-Control", "Pragma", "WWW-Authenticate", *(name for name, _ in SECURITY_HEADERS))


def _signed_in(provider, scope="openid profile offline_access"):
    client_id, secret, redirect = provider.add_client(scope="openid profile offline_access")
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope=scope)
    tokens = browser.exchange(client_id, secret, redirect, result["code"])
    assert tokens.status_code == 200, tokens.text
    return (client_id, secret, redirect), tokens.json()


def _same(fast: requests.Response, view: requests.Response) -> None:
    assert fast.status_code == view.status_code, (fast.text, view.text)
    assert fast.json() == view.json()
    for name in HEADERS:
        assert fast.headers.get(name) == view.headers.get(name), name


def _userinfo(provider, token: str, through_view: bool) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if through_view:  # a POST with the token in the header: RFC 6750 §2.1, answered by the view
        return requests.post(f"{provider.url}/userinfo", headers=headers, timeout=10)
    return requests.get(f"{provider.url}/userinfo", headers=headers, timeout=10)


def _introspect(provider, client, token: str, through_view: bool, **extra) -> requests.Response:
    client_id, secret, _ = client
    if through_view:  # client_secret_post: answered by Authlib's endpoint
        return requests.post(f"{provider.url}/introspect", timeout=10,
                             data={"token": token, "client_id": client_id, "client_secret": secret, **extra})
    return requests.post(f"{provider.url}/introspect", data={"token": token, **extra}, auth=(client_id, secret),
                         timeout=10)


def test_userinfo_the_same_both_ways(provider):
    client, tokens = _signed_in(provider)
    fast, view = _userinfo(provider, tokens["access_token"], False), _userinfo(provider, tokens["access_token"], True)
    assert fast.status_code == 200 and fast.json()["sub"]
    _same(fast, view)
    for bad in ("a.b.c", tokens["access_token"][:-4] + "AAAA", tokens["id_token"]):
        fast, view = _userinfo(provider, bad, False), _userinfo(provider, bad, True)
        assert fast.status_code == 401 and 'error="invalid_token"' in fast.headers["WWW-Authenticate"]
        _same(fast, view)
    # revoked (RFC 7009): refused both ways
    client_id, secret, _ = client
    revoked = requests.post(f"{provider.url}/revoke", data={"token": tokens["access_token"]}, auth=(client_id, secret),
                            timeout=10)
    assert revoked.status_code == 200
    fast, view = _userinfo(provider, tokens["access_token"], False), _userinfo(provider, tokens["access_token"], True)
    assert fast.status_code == 401
    _same(fast, view)


def test_introspection_the_same_both_ways(provider):
    client, tokens = _signed_in(provider)
    other, other_tokens = _signed_in(provider)
    token = tokens["access_token"]
    fast, view = _introspect(provider, client, token, False), _introspect(provider, client, token, True)
    assert fast.status_code == 200 and fast.json()["active"] is True and fast.json()["client_id"] == client[0]
    _same(fast, view)
    assert fast.content == view.content  # byte for byte, as Authlib writes it
    fast = _introspect(provider, client, token, False, token_type_hint="access_token")
    _same(fast, view)
    # inactive: not a token of ours, another client's token, a damaged signature
    for bad in ("a.b.c", other_tokens["access_token"], token[:-4] + "AAAA"):
        fast, view = _introspect(provider, client, bad, False), _introspect(provider, client, bad, True)
        assert fast.status_code == 200 and fast.json() == {"active": False}
        _same(fast, view)
    requests.post(f"{provider.url}/revoke", data={"token": token}, auth=client[:2], timeout=10)
    fast, view = _introspect(provider, client, token, False), _introspect(provider, client, token, True)
    assert fast.json() == {"active": False}
    _same(fast, view)


def test_introspection_left_to_the_view(provider):
    """Requests the fast path does not take are answered by the view, as before."""
    client, tokens = _signed_in(provider)
    client_id, secret, _ = client
    url = f"{provider.url}/introspect"
    # a wrong secret, an unknown client: 401 invalid_client from Authlib's endpoint
    for auth in ((client_id, secret + "x"), ("nobody", secret)):
        refused = requests.post(url, data={"token": tokens["access_token"]}, auth=auth, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    # a refresh token (no dots): the view looks it up
    seen = requests.post(url, data={"token": tokens["refresh_token"]}, auth=(client_id, secret), timeout=10)
    assert seen.status_code == 200 and seen.json()["active"] is True and seen.json()["token_type"] == "refresh_token"
    # a repeated or unknown parameter, no token: still the view's answers
    repeated = requests.post(url, data=[("token", tokens["access_token"]), ("token", "x")], auth=(client_id, secret),
                             timeout=10)
    assert repeated.status_code == 200
    missing = requests.post(url, data={"nothing": "here"}, auth=(client_id, secret), timeout=10)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    # a body that is not a form
    wrong = requests.post(url, data='{"token": "x"}', headers={"Content-Type": "application/json"},
                          auth=(client_id, secret), timeout=10)
    assert wrong.status_code == 400


def test_fast_answers_carry_the_security_headers_and_are_not_cached(provider):
    client, tokens = _signed_in(provider)
    for response in (_userinfo(provider, tokens["access_token"], False),
                     _introspect(provider, client, tokens["access_token"], False)):
        assert response.headers["Cache-Control"] == "no-store"
        for name, value in SECURITY_HEADERS:
            assert response.headers[name] == value


def test_a_foreign_host_is_refused_on_the_fast_paths_too(provider):
    client, tokens = _signed_in(provider)
    answer = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}",
                                                              "Host": "evil.example"}, timeout=10)
    assert answer.status_code == 400
    answer = requests.post(f"{provider.url}/introspect", data={"token": tokens["access_token"]}, auth=client[:2],
                           headers={"Host": "evil.example"}, timeout=10)
    assert answer.status_code == 400


def test_a_login_still_works_end_to_end_through_both(provider):
    """The code from a login, the tokens, userinfo and introspection: the common path taken."""
    client_id, secret, redirect = provider.add_client(scope="openid profile")
    national_id, mobile = provider.add_citizen()
    browser = provider.flow()
    result = browser.login(client_id, redirect, national_id, mobile, scope="openid profile")
    tokens = browser.exchange(client_id, secret, redirect, result["code"]).json()
    info = requests.get(f"{provider.url}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"},
                        timeout=10)
    assert info.status_code == 200 and info.json()["sub"] and info.json()["given_name"]
    seen = requests.post(f"{provider.url}/introspect", data={"token": tokens["access_token"]},
                         auth=(client_id, secret), timeout=10)
    assert seen.json()["active"] is True and seen.json()["sub"] == info.json()["sub"]
