"""Bad input, fuzzed (issue 6 item 7): property-based tests (Hypothesis) of the national ID and
mobile parsers, and of every form and protocol endpoint over real HTTP with malformed, oversized
and hostile input.

The properties:

- parsers: every valid national ID / mobile number, typed in any mix of digit scripts and
  separators, parses to its ASCII form; every other input raises the documented
  ``InvalidNationalId`` / ``InvalidMobile``, never anything else;
- endpoints: never a 5xx; protocol endpoints answer JSON with an ``error`` of RFC 6749 / 6750 /
  7009 / 7662 (or 200 where the RFC says so); pages answer HTML (4xx for what they refuse); a
  redirect goes to the provider itself or to a URI the client registered, never elsewhere.

Requests are written byte for byte on a socket (``raw``), so that invalid UTF-8, invalid
percent-encoding, duplicated parameters, wrong content types and hostile headers reach the
server exactly as an attacker would send them. Hypothesis is bounded and derandomized so that CI
runs the same examples every time (``FUZZ``); SQLite only, for speed.
"""
from __future__ import annotations

import base64
import http.client
import json
import re
import socket
from dataclasses import dataclass
from email.message import Message
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import pytest
import requests
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from idp.citizens.national_id import (
    InvalidMobile,
    InvalidNationalId,
    check_digit,
    make_national_id,
    normalize_digits,
    parse_mobile,
    parse_national_id,
)

from .conftest import sqlite_provider
from .helpers import csrf_token, form_fields, pkce_pair

FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
#: The parsers are pure functions: many more examples cost nothing.
PARSERS = settings(FUZZ, max_examples=300)


# =================================================================================================
# The parsers
# =================================================================================================

SCRIPTS = ("0123456789", "۰۱۲۳۴۵۶۷۸۹", "٠١٢٣٤٥٦٧٨٩")  # ASCII, Persian, Arabic-Indic
#: What people paste or type between digits (national_id._SEPARATORS): spaces of every kind,
#: hyphens, dots, parentheses, zero-width joiners and the bidi marks phones insert.
SEPARATORS = (" ", "\u00a0", "\t", "\u2009", "\u3000", "-", ".", "(", ")", "\u200c", "\u200d", "\u200e",
              "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
              "\u2069", "\ufeff")

nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9)
issued_ids = nine_digits.map(make_national_id).filter(lambda nid: len(set(nid)) > 1)


@st.composite
def typed(draw, ascii_digits: str) -> str:
    """``ascii_digits`` as a person may type it: each digit in any script, separators anywhere."""
    seps = st.lists(st.sampled_from(SEPARATORS), max_size=2).map("".join)
    out = [draw(seps)]
    for ch in ascii_digits:
        out.append(draw(st.sampled_from(SCRIPTS))[int(ch)] if ch.isdigit() else ch)
        out.append(draw(seps))
    return "".join(out)


#: Text near the parsers' edges: digits of three scripts (and of others), separators, signs.
near_numbers = st.text(alphabet=st.sampled_from(
    list("0123456789+") + list(SCRIPTS[1] + SCRIPTS[2]) + list(SEPARATORS)
    + ["०", "１", "𝟘", "²", "\x00", "\x1c", "\n", "a", "ـ", "\ud800"]), max_size=70)
any_text = st.one_of(st.text(alphabet=st.characters(exclude_categories=()), max_size=80), near_numbers)


@PARSERS
@given(issued_ids.flatmap(lambda nid: st.tuples(st.just(nid), typed(nid))))
def test_every_valid_national_id_in_any_script_parses_to_ascii(case):
    national_id, as_typed = case
    assert parse_national_id(as_typed) == national_id


@PARSERS
@given(st.one_of(any_text, issued_ids.flatmap(typed),
                 st.builds(lambda nid, i, d: nid[:i] + d + nid[i + 1:], issued_ids, st.integers(0, 9),
                           st.sampled_from("0123456789")),
                 st.none(), st.integers(), st.binary(max_size=12), st.lists(st.text(max_size=3), max_size=3)))
@example("1111111111")  # passes the arithmetic but is never issued
@example("0" * 10)
@example("۰۰۸۴۵۷۵۹۴" + "x")
@example("\u200e" * 70)
def test_national_id_parses_or_raises_invalid_national_id(text):
    try:
        value = parse_national_id(text)
    except InvalidNationalId:
        return
    assert isinstance(text, str)
    assert re.fullmatch(r"[0-9]{10}", value) and len(set(value)) > 1
    assert check_digit(value[:9]) == int(value[9])
    assert value == normalize_digits(text)


@PARSERS
@given(nine_digits, st.integers(0, 9), st.integers(1, 9))
def test_check_digit(first_nine, position, shift):
    national_id = make_national_id(first_nine)
    check = check_digit(first_nine)
    assert 0 <= check <= 9
    # The documented rule: r = sum(d_i * (10 - i)) mod 11; check = r if r < 2 else 11 - r.
    r = sum(int(d) * (10 - i) for i, d in enumerate(first_nine)) % 11
    assert check == (r if r < 2 else 11 - r)
    if len(set(national_id)) == 1:
        with pytest.raises(InvalidNationalId):
            parse_national_id(national_id)
        return
    assert parse_national_id(national_id) == national_id
    # Any other check digit is refused.
    wrong_check = national_id[:9] + str((check + shift) % 10)
    with pytest.raises(InvalidNationalId):
        parse_national_id(wrong_check)
    # One mistyped digit among the first nine is caught, except when the remainder moves
    # between 1 and 10 (both give the check digit 1): a property of the national scheme.
    if position < 9:
        digit = str((int(national_id[position]) + shift) % 10)
        typo = national_id[:position] + digit + national_id[position + 1:]
        r2 = sum(int(d) * (10 - i) for i, d in enumerate(typo[:9])) % 11
        if {r, r2} != {1, 10} and len(set(typo)) > 1:
            with pytest.raises(InvalidNationalId):
                parse_national_id(typo)


MOBILE_FORMS = ("+989{}", "00989{}", "989{}", "09{}", "9{}")


@PARSERS
@given(nine_digits, st.sampled_from(MOBILE_FORMS), st.data())
def test_every_mobile_form_in_any_script_parses_to_e164(digits, form, data):
    assert parse_mobile(data.draw(typed(form.format(digits)))) == "+989" + digits


@PARSERS
@given(st.one_of(any_text,
                 st.builds(lambda f, d: f.format(d), st.sampled_from(MOBILE_FORMS + ("+98{}", "08{}", "0989{}",
                                                                                    "+9890{}", "+979{}")),
                           st.text(alphabet="0123456789", min_size=7, max_size=11)),
                 st.none(), st.integers(), st.binary(max_size=12)))
@example("+98 912 345 6789\u200f")
@example("0912-345-67890")
@example("＋989123456789")
def test_mobile_parses_or_raises_invalid_mobile(text):
    try:
        value = parse_mobile(text)
    except InvalidMobile:
        return
    assert isinstance(text, str)
    assert re.fullmatch(r"\+989[0-9]{9}", value)
    assert normalize_digits(text).endswith(value[4:])


# =================================================================================================
# The endpoints, over real HTTP
# =================================================================================================

@pytest.fixture(scope="module")
def provider(tmp_path_factory, redis_url):
    """The provider on SQLite with real Redis (this module's own: fuzzing is slow enough once)."""
    with sqlite_provider(tmp_path_factory, redis_url, "fuzz") as live:
        yield live


# ---- a raw HTTP client ---------------------------------------------------------------------------

#: Answers of the HTTP server itself (werkzeug's request line / header limits), before the app.
SERVER_LIMITS = (414, 431)


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes
    request: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        return (f"{self.status} {self.content_type} Location={self.location!r}\n  body: {self.body[:300]!r}"
                f"\n  request: {self.request[:400]!r}")


def _bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def raw(provider, method: str, target: str | bytes, headers=(), body: bytes | None = None,
        host: bytes | None = None) -> Answer:
    """Send one request exactly as given (no normalisation by an HTTP library)."""
    parts = urlsplit(provider.url)
    lines = [_bytes(method) + b" " + _bytes(target) + b" HTTP/1.1",
             b"Host: " + (host if host is not None else parts.netloc.encode()), b"Connection: close"]
    for name, value in headers:
        lines.append(_bytes(name) + b": " + _bytes(value))
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    request = b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")
    with socket.create_connection((parts.hostname, parts.port), timeout=15) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before reading everything
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        data = response.read()
        return Answer(response.status, response.msg, data, request)


# ---- what every answer must be ---------------------------------------------------------------------

#: Token endpoint errors (RFC 6749 §5.2).
RFC6749 = {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
           "invalid_scope"}
#: Revocation (RFC 7009 §2.2.1) and introspection (RFC 7662 §2.3) add unsupported_token_type.
RFC7009 = RFC6749 | {"unsupported_token_type"}
RFC7662 = RFC7009
#: Resource errors (RFC 6750 §3.1).
RFC6750 = {"invalid_request", "invalid_token", "insufficient_scope"}


def assert_protocol(answer: Answer, errors: set[str], ok: tuple[int, ...] = ()) -> dict | None:
    """JSON with an RFC error code; 200 only where the RFC says so; never a 5xx."""
    event(f"status {answer.status}")
    assert answer.status < 500, str(answer)
    if answer.status in SERVER_LIMITS:
        return None
    assert answer.content_type.startswith(("application/json", "application/jwk-set+json")), str(answer)
    body = answer.json()
    if answer.status in ok:
        return body
    assert 400 <= answer.status < 500, str(answer)
    assert body.get("error") in errors, str(answer)
    return body


def _redirect_ok(location: str, provider, allowed: tuple[str, ...]) -> bool:
    if location.startswith("/") and not location.startswith(("//", "/\\")):
        return True  # on the provider itself
    if location.startswith(provider.url + "/"):
        return True
    return any(location == uri or location.startswith(uri + "?") for uri in allowed)


def assert_page(answer: Answer, provider, allowed: tuple[str, ...] = (), authorization: bool = False) -> None:
    """HTML (4xx for what is refused), never a 5xx; redirects only to the provider or to ``allowed``;
    with ``authorization``, a redirect to the client carries ``iss`` (RFC 9207)."""
    event(f"status {answer.status}" + (" (to the client)" if answer.location and not _redirect_ok(
        answer.location, provider, ()) else ""))
    assert answer.status < 500, str(answer)
    if answer.status in SERVER_LIMITS:
        return
    if 300 <= answer.status < 400:
        assert answer.location and _redirect_ok(answer.location, provider, allowed), str(answer)
        if authorization and any(answer.location.startswith(u + "?") for u in allowed):
            query = parse_qs(urlsplit(answer.location).query)
            assert ("code" in query) != ("error" in query), str(answer)
            assert query.get("iss") == [provider.url], str(answer)
        return
    assert "text/html" in answer.content_type, str(answer)


# ---- hostile input -------------------------------------------------------------------------------

HUGE = 100_000
ATOMS = ["", " ", "\x00", "\x00" * 8, "\x01\x02\x1f\x7f", "\r\n", "\r\nSet-Cookie: x=1", "\t", "\u0085", "\u2028",
         "'\"<>&", "<script>alert(1)</script>", "ä\"\\", "\u202e", "\ufeff", "\ud7ff", "\U0001F600", "%00", "%zz",
         "%", "%%", "%C0%AF", "../../..", "..%2f..%2f", "javascript:alert(1)", "https://evil.example/cb",
         "//evil.example", "۰۰۸۴۵۷۵۹۴۸", "٠٩١٢١٢٣٤٥٦٧", "0912١٢٣4567", "𝟘𝟡𝟙𝟚", "²", "null", "[]", "{}", "0", "-1",
         "1e309", "NaN", "true", "S256", "plain", "none", "code", "openid", "openid offline_access", "refresh_token",
         "authorization_code", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "=", "&", "+", ";", "?", "#", "*" * 70]
atoms = st.sampled_from(ATOMS)
hostile_value = st.one_of(
    atoms,
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.builds(lambda a, n: a * n, st.sampled_from([a for a in ATOMS if a]), st.integers(2, 40)),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "ü", "۱", "\x00", "%"]),
              st.sampled_from([65, 257, 2049, 4097, 8193, 20_000, HUGE])),
)


def name_strategy(names: tuple[str, ...]):
    return st.one_of(st.sampled_from(names), st.sampled_from(names), atoms, st.text(max_size=20),
                     st.sampled_from(["x" * 65, "x" * 5000]))


@st.composite
def mutated(draw, base: list[tuple[str, str]], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """A valid parameter list, then dropped, duplicated, replaced and added parameters."""
    pairs = list(base)
    for op in draw(st.lists(st.sampled_from(["drop", "dup", "set", "set", "add"]), max_size=5)):
        if op == "add" or not pairs:
            pairs.append((draw(name_strategy(names)), draw(hostile_value)))
            continue
        k = draw(st.integers(0, len(pairs) - 1))
        if op == "drop":
            pairs.pop(k)
        elif op == "dup":
            pairs.insert(draw(st.integers(0, len(pairs))), (pairs[k][0], draw(st.one_of(st.just(pairs[k][1]),
                                                                                        hostile_value))))
        else:
            pairs[k] = (pairs[k][0], draw(hostile_value))
    return pairs


def _encode(pairs) -> bytes:
    return urlencode([(k, v.encode("utf-8", "surrogatepass") if isinstance(v, str) else v)
                      for k, v in pairs], encoding="utf-8", errors="surrogatepass").encode()


#: Bytes no correct client sends in a query or form body.
JUNK = [b"%zz", b"%", b"%%", b"%f", b"a=%ff%fe", b"%ff=%00", b"\xff\xfe", b"a=\xc3", b"&&&", b"==", b"a==b=c",
        b";a=b", b"a[]=1&a[b]=2", b"+%2B+", b"%u0041", b"%C0%AF", b"a=\x00b"]


@st.composite
def encoded(draw, pairs) -> bytes:
    """The parameters percent-encoded, sometimes with junk bytes spliced in."""
    data = _encode(pairs)
    if draw(st.integers(0, 3)) == 0:
        junk = b"&".join(draw(st.lists(st.sampled_from(JUNK), min_size=1, max_size=3)))
        at = draw(st.integers(0, 1000)) * len(data) // 1000  # not len(data): tokens vary in length
        data = data[:at] + b"&" + junk + b"&" + data[at:]
    return data


CONTENT_TYPES = [b"application/x-www-form-urlencoded"] * 12 + [
    b"application/x-www-form-urlencoded; charset=utf-8", b"application/x-www-form-urlencoded; charset=iso-8859-1",
    b"application/x-www-form-urlencoded; charset=x-unknown", b"application/json", b"text/plain", b"application/xml",
    b"multipart/form-data", b"multipart/form-data; boundary=zz", b"", b"garbage", b"\xff\xfe/\x00", None]


@st.composite
def body_of(draw, pairs) -> tuple[bytes, list]:
    """A request body for the parameters, in the right or a wrong form and content type."""
    kind = draw(st.sampled_from(["form"] * 6 + ["json", "json-list", "multipart"]))
    if kind == "json":
        payload = {}
        for k, v in pairs:
            payload[k] = draw(st.sampled_from([v, [v, v], {"v": v}, 1, None, True]))
        body, ctype = json.dumps(payload).encode(), draw(st.sampled_from([b"application/json", None,
                                                                          b"application/x-www-form-urlencoded"]))
    elif kind == "json-list":
        body, ctype = json.dumps(pairs).encode(), b"application/json"
    elif kind == "multipart":
        parts = [b"--zz\r\nContent-Disposition: form-data; name=\"" + _bytes(k).replace(b'"', b"")[:100] + b"\"\r\n\r\n"
                 + v.encode("utf-8", "surrogatepass") + b"\r\n" for k, v in pairs]
        body = b"".join(parts) + draw(st.sampled_from([b"--zz--\r\n", b"", b"--zz"]))
        ctype = draw(st.sampled_from([b"multipart/form-data; boundary=zz", b"multipart/form-data"]))
    else:
        body, ctype = draw(encoded(pairs)), draw(st.sampled_from(CONTENT_TYPES))
    headers = [] if ctype is None else [(b"Content-Type", ctype)]
    return body, headers


#: Authorization headers that crash Authlib's Basic parser (test_malformed_authorization_is_invalid_client).
MALFORMED_AUTHORIZATION = {
    "Basic and a space": b"Basic ",
    "Basic and a tab": b"Basic \t",
    "Bearer and a space": b"Bearer ",
    "any scheme and a space": b"Digest ",
    "latin-1 bytes": b"Basic " + base64.b64encode("\u00fc:\u00e4".encode("latin-1")),
    "invalid utf-8": b"Basic " + base64.b64encode(b"\xff\xfe:\xc3"),
}


def basic(user: str | bytes, password: str | bytes | None = "") -> str:
    """Basic credentials; str is sent as UTF-8, bytes as they are."""
    enc = lambda v: v if isinstance(v, bytes) else v.encode("utf-8")  # noqa: E731
    raw_pair = enc(user) + (b":" + enc(password) if password is not None else b"")
    return "Basic " + base64.b64encode(raw_pair).decode()


@st.composite
def authorization(draw, client: tuple[str, str] | None = None) -> list:
    """An Authorization header, right, wrong or hostile (the shapes in MALFORMED_AUTHORIZATION, which once
    gave a 500, have a test of their own as well)."""
    options = [None, "Basic", "Basic !!!", "Basic ====", basic("no-colon", None), basic("", ""),
               basic(":"), basic("ü", "ä"), basic("x" * 70, "y"), basic("%zz", "%ff"), basic("\x00", "\x00"),
               basic("a:b", "c:d"), "Bearer", "Bearer a.b.c", "Bearer " + "a" * 5000,
               "Bearer eyJhbGciOiJub25lIn0.e30.", "Bearer \x01\x7f", "bearer  x", "Digest x", "Negotiate \xff",
               "\x00", "Basic " + "A" * 6000, "Bearer " + "a" * HUGE]
    if client:
        options += [basic(*client)] * 4 + [basic(client[0], "wrong"), basic(client[0], client[1] + "\x00"),
                                           basic(quote(client[0]), quote(client[1]))]
    value = draw(st.sampled_from(options))
    if value is None:
        return []
    return [(b"Authorization", _bytes(value))] * draw(st.sampled_from([1, 1, 1, 2]))


EXTRA_HEADERS = [(b"Origin", b"https://evil.example"), (b"X-Forwarded-For", b"6.6.6.6"),
                 (b"X-Forwarded-Proto", b"https"), (b"X-Forwarded-Host", b"evil.example"),
                 (b"Accept", b"application/json"), (b"Accept-Language", b"\xff\x00;q=x"),
                 (b"Cookie", b"idp_sso=" + b"A" * 70), (b"Cookie", b"idp_sso=\x00; idp_session=garbage"),
                 (b"Cookie", b"idp_session=" + b"x." * 500), (b"Cookie", b"=;;;=;idp_flow_=\xff"),
                 (b"Referer", b"\xff"), (b"User-Agent", b"\x00" * 10)]
extra_headers = st.lists(st.sampled_from(EXTRA_HEADERS), max_size=3)


# ---- fixtures: clients, citizens and browsers in every state ----------------------------------------

@pytest.fixture(scope="module")
def agency(provider):
    """A confidential client with a post-logout URI; (client_id, secret, redirect_uri, post_logout_uri)."""
    bye = "http://127.0.0.1:9/fuzz/bye"
    client_id, secret, redirect = provider.add_client(post_logout_redirect_uris=[bye],
                                                      scope="openid profile phone offline_access")
    return client_id, secret, redirect, bye


@pytest.fixture(scope="module")
def citizen(provider):
    """The citizen whose national ID and mobile the identify form is fuzzed with (their pair soon
    reaches its limit of codes: every fixture that logs in has a citizen of its own)."""
    return provider.add_citizen()


@pytest.fixture(scope="module")
def signed_in(provider, agency):
    """A browser with an SSO session (fresh enough for the account pages) and its tokens."""
    client_id, secret, redirect, _ = agency
    browser = provider.flow()
    result = browser.login(client_id, redirect, *provider.add_citizen(),
                           scope="openid profile phone offline_access")
    tokens = browser.exchange(client_id, secret, redirect, result["code"]).json()
    return browser, tokens


def cookies_of(browser) -> list:
    jar = "; ".join(f"{c.name}={c.value}" for c in browser.http.cookies)
    return [(b"Cookie", jar.encode())] if jar else []


def authorize_params(provider, client_id: str, redirect: str) -> list[tuple[str, str]]:
    _, challenge = pkce_pair()
    return [("response_type", "code"), ("client_id", client_id), ("redirect_uri", redirect),
            ("scope", "openid profile"), ("state", "s1"), ("nonce", "n1"), ("code_challenge", challenge),
            ("code_challenge_method", "S256")]


AUTHORIZE_NAMES = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
                   "code_challenge_method", "prompt", "max_age", "acr_values", "login_hint", "id_token_hint",
                   "ui_locales", "response_mode", "request", "request_uri", "claims", "display")


# ---- /authorize ------------------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), method=st.sampled_from(["GET", "GET", "POST"]), with_session=st.booleans())
def test_authorize_never_fails_and_never_redirects_elsewhere(provider, agency, signed_in, data, method,
                                                             with_session):
    client_id, _, redirect, _ = agency
    pairs = data.draw(mutated(authorize_params(provider, client_id, redirect), AUTHORIZE_NAMES))
    headers = data.draw(extra_headers) + (cookies_of(signed_in[0]) if with_session else [])
    if method == "GET":
        answer = raw(provider, "GET", b"/authorize?" + data.draw(encoded(pairs)), headers)
    else:
        body, ctype = data.draw(body_of(pairs))
        answer = raw(provider, "POST", "/authorize", headers + ctype, body)
    assert_page(answer, provider, allowed=(redirect,), authorization=True)


# ---- /token, /revoke, /introspect ---------------------------------------------------------------------

TOKEN_NAMES = ("grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "client_id",
               "client_secret", "client_assertion", "client_assertion_type", "scope", "resource", "audience")


@FUZZ
@given(data=st.data())
def test_token_endpoint_answers_rfc6749_errors(provider, agency, data):
    client_id, secret, redirect, _ = agency
    base = data.draw(st.sampled_from([
        [("grant_type", "authorization_code"), ("code", "nope"), ("redirect_uri", redirect),
         ("code_verifier", "A" * 43)],
        [("grant_type", "refresh_token"), ("refresh_token", "nope")],
        [("grant_type", "authorization_code"), ("code", "nope"), ("redirect_uri", redirect),
         ("code_verifier", "A" * 43), ("client_id", client_id), ("client_secret", secret)],
        [("grant_type", "client_credentials"), ("scope", "openid")],
        [("grant_type", "password"), ("username", "x"), ("password", "y")],
        [],
    ]))
    pairs = data.draw(mutated(base, TOKEN_NAMES))
    body, ctype = data.draw(body_of(pairs))
    headers = data.draw(authorization((client_id, secret))) + ctype + data.draw(extra_headers)
    answer = raw(provider, "POST", "/token", headers, body)
    if assert_protocol(answer, RFC6749) is None:
        return  # refused by the HTTP server itself (header too large)
    assert answer.headers.get("Cache-Control") == "no-store", str(answer)
    assert "Access-Control-Allow-Origin" not in answer.headers


@FUZZ
@given(data=st.data(), endpoint=st.sampled_from(["/revoke", "/introspect"]))
def test_revocation_and_introspection_answer_rfc7009_and_rfc7662(provider, agency, signed_in, data, endpoint):
    client_id, secret, _, _ = agency
    tokens = signed_in[1]
    base = [("token", data.draw(st.sampled_from(["nope", "a.b.c", tokens["id_token"],
                                                 tokens["access_token"][:-3] + "AAA", "x" * 300])))]
    if data.draw(st.booleans()):
        base.append(("token_type_hint", data.draw(st.sampled_from(["access_token", "refresh_token"]))))
    pairs = data.draw(mutated(base, ("token", "token_type_hint", "client_id", "client_secret")))
    body, ctype = data.draw(body_of(pairs))
    headers = data.draw(authorization((client_id, secret))) + ctype + data.draw(extra_headers)
    answer = raw(provider, "POST", endpoint, headers, body)
    result = assert_protocol(answer, RFC7009 if endpoint == "/revoke" else RFC7662, ok=(200,))
    if result is None:
        return  # refused by the HTTP server itself (header too large)
    if answer.status == 200 and endpoint == "/introspect":
        assert result == {"active": False}, str(answer)  # nothing here is a live token of ours
    if answer.status == 200 and endpoint == "/revoke":
        assert result == {}, str(answer)
    assert answer.headers.get("Cache-Control") == "no-store", str(answer)


@pytest.mark.parametrize("shape", sorted(MALFORMED_AUTHORIZATION))
def test_malformed_authorization_is_invalid_client(provider, agency, shape):
    """RFC 6749 §2.3.1 / §5.2: a client that cannot authenticate gets 401 invalid_client, whatever
    its Authorization header holds (RFC 7009 §2.1, RFC 7662 §2.1: the same client authentication)."""
    header = [(b"Authorization", MALFORMED_AUTHORIZATION[shape]), (b"Content-Type", b"application/x-www-form-urlencoded")]
    for endpoint, body in (("/token", b"grant_type=authorization_code&code=x&code_verifier=" + b"A" * 43),
                           ("/revoke", b"token=x"), ("/introspect", b"token=x")):
        answer = raw(provider, "POST", endpoint, header, body)
        assert answer.status == 401 and answer.json()["error"] == "invalid_client", (endpoint, str(answer))


def test_an_unknown_token_type_hint_is_ignored(provider, agency):
    client_id, secret, _, _ = agency
    for endpoint in ("/revoke", "/introspect"):
        r = requests.post(f"{provider.url}{endpoint}", data={"token": "nope", "token_type_hint": "id_token"},
                          auth=(client_id, secret), timeout=10)
        assert r.status_code == 200, (endpoint, r.status_code, r.text)


# ---- /userinfo ----------------------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), method=st.sampled_from(["GET", "POST"]))
def test_userinfo_answers_rfc6750_errors(provider, signed_in, data, method):
    token = signed_in[1]["access_token"]
    options = [None, "Bearer " + token[:-2] + "xx", "Bearer " + signed_in[1]["id_token"], "Basic " + token,
               "Bearer " + token + "\x00", "Bearer " + token + " " + token, "Bearer " + token.replace(".", "..", 1)]
    header = data.draw(st.one_of(authorization(), st.sampled_from(options).map(
        lambda v: [] if v is None else [(b"Authorization", _bytes(v))])))
    pairs = data.draw(mutated([("access_token", data.draw(st.sampled_from(["x", token[:-4]])))],
                              ("access_token", "scope", "claims")))
    if method == "GET":
        answer = raw(provider, "GET", b"/userinfo?" + data.draw(encoded(pairs)), header + data.draw(extra_headers))
    else:
        body, ctype = data.draw(body_of(pairs))
        answer = raw(provider, "POST", "/userinfo", header + ctype + data.draw(extra_headers), body)
    assert_protocol(answer, RFC6750)
    if answer.status == 401:
        assert answer.headers.get("WWW-Authenticate", "").startswith("Bearer"), str(answer)


# ---- discovery and keys ----------------------------------------------------------------------------

@FUZZ
@given(data=st.data(), path=st.sampled_from(["/.well-known/openid-configuration", "/jwks"]),
       method=st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]))
def test_discovery_and_jwks_answer_json(provider, data, path, method):
    pairs = data.draw(mutated([], ("issuer", "x")))
    headers = data.draw(authorization()) + data.draw(extra_headers)
    target = path.encode() + (b"?" + data.draw(encoded(pairs)) if pairs else b"")
    answer = raw(provider, method, target, headers, b"" if method in ("POST", "PUT") else None)
    assert answer.status < 500, str(answer)
    if method == "GET" and answer.status not in SERVER_LIMITS:
        assert answer.status == 200, str(answer)
        body = answer.json()
        if path == "/jwks":
            assert body["keys"], str(answer)
        else:
            assert body["issuer"] == provider.url, str(answer)
    elif method in ("POST", "PUT", "DELETE"):
        assert_protocol(answer, RFC6749)


# ---- the login pages -------------------------------------------------------------------------------

def _paused(provider, client_id: str, redirect: str):
    """A fresh browser stopped at the identify page; (browser, page)."""
    browser = provider.flow()
    page = browser.start(client_id, redirect)
    assert page.status_code == 200 and 'name="national_id"' in page.text, page.text[:300]
    return browser, page


def _target(page_url: str, rid_choice: str | None) -> bytes:
    parts = urlsplit(page_url)
    if rid_choice is None:
        return (parts.path + "?" + parts.query).encode()
    return parts.path.encode() + b"?" + _encode([("r", rid_choice)])


def _form_post(provider, browser, page, path: str, pairs, data, cookies: bool) -> Answer:
    rid_choice = data.draw(st.one_of(st.none(), st.none(), st.none(), hostile_value))
    target = re.sub(rb"^/login[^?]*", path.encode(), _target(page.url, rid_choice))
    body, ctype = data.draw(body_of(pairs))
    headers = (cookies_of(browser) if cookies else []) + ctype + data.draw(extra_headers)
    return raw(provider, "POST", target, headers, body)


@pytest.fixture(scope="module")
def identify_page(provider, agency):
    return _paused(provider, agency[0], agency[2])


@FUZZ
@given(data=st.data(), cookies=st.sampled_from([True, True, True, False]))
def test_login_form_refuses_hostile_input_with_a_page(provider, agency, citizen, identify_page, data, cookies):
    browser, page = identify_page
    national_id, mobile = citizen
    base = [("csrf_token", csrf_token(page.text)),
            ("national_id", data.draw(st.sampled_from([national_id, make_national_id("987654321"), "1"]))),
            ("mobile", data.draw(st.sampled_from([mobile, "09121234567", ""])))]
    pairs = data.draw(mutated(base, ("csrf_token", "national_id", "mobile", "method")))
    answer = _form_post(provider, browser, page, "/login", pairs, data, cookies)
    assert_page(answer, provider)


@settings(FUZZ, max_examples=60)  # four requests an example: a fresh challenge each time
@given(data=st.data(), cookies=st.sampled_from([True, True, True, False]))
def test_code_form_refuses_hostile_input_with_a_page(provider, agency, data, cookies):
    # A fresh challenge each time (for a pair nobody registered: the pages are the same). When
    # Hypothesis replays an example the pair hits its limit and the "page" is the limit page:
    # the code form is fuzzed all the same (the draws must not depend on what the server says).
    browser, page = _paused(provider, agency[0], agency[2])
    stranger = make_national_id(f"{data.draw(st.integers(10**7, 10**9 - 1)):09d}")
    mobile = f"0935{data.draw(st.integers(0, 10**7 - 1)):07d}"
    code_page = browser.follow(browser.submit(page, {"national_id": stranger, "mobile": mobile}), agency[2])
    assert code_page.status_code in (200, 400, 429), code_page.status_code
    otp_value = data.draw(st.one_of(hostile_value, st.text(alphabet="0123456789۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩ -\u200f",
                                                           max_size=12)))
    csrf = form_fields(code_page.text).get("csrf_token", "")
    pairs = data.draw(mutated([("csrf_token", csrf), ("otp", otp_value)], ("csrf_token", "otp")))
    answer = _form_post(provider, browser, code_page if 'name="otp"' in code_page.text else page, "/login/code", pairs, data, cookies)
    assert_page(answer, provider)
    location = answer.location or ""
    assert not (answer.status in (302, 303) and ("code=" in location or "/consent" in location)), "a guess got in"


@pytest.fixture(scope="module")
def code_page_state(provider, agency):
    browser, page = _paused(provider, agency[0], agency[2])
    code_page = browser.follow(browser.submit(page, {"national_id": make_national_id("123454321"),
                                                     "mobile": "09351112233"}), agency[2])
    assert 'name="otp"' in code_page.text
    return browser, code_page


@FUZZ
@given(data=st.data(), cookies=st.booleans())
def test_resend_refuses_hostile_input_with_a_page(provider, code_page_state, data, cookies):
    browser, code_page = code_page_state
    pairs = data.draw(mutated([("csrf_token", csrf_token(code_page.text))], ("csrf_token", "otp", "r")))
    answer = _form_post(provider, browser, code_page, "/login/resend", pairs, data, cookies)
    assert_page(answer, provider)


# ---- consent, logout, account ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def consent_state(provider, agency):
    """A browser signed in and stopped at the consent page of an untrusted client."""
    client_id, _, redirect = provider.add_client(trusted=False)
    browser = provider.flow()
    browser.login(agency[0], agency[2], *provider.add_citizen())
    page = browser.follow(browser.get(browser.authorize_url(client_id, redirect)), redirect)
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text[:300]
    return browser, page, redirect


@FUZZ
@given(data=st.data(), method=st.sampled_from(["GET", "POST", "POST"]), cookies=st.booleans())
def test_consent_page_refuses_hostile_input_with_a_page(provider, consent_state, data, method, cookies):
    browser, page, redirect = consent_state
    decision = data.draw(st.one_of(hostile_value, st.sampled_from(["approve", "deny"])))
    csrf = data.draw(st.one_of(hostile_value, st.just(csrf_token(page.text))))
    pairs = data.draw(mutated([("csrf_token", csrf), ("decision", decision)], ("csrf_token", "decision")))
    if method == "GET":
        answer = raw(provider, "GET", b"/consent?" + data.draw(encoded(pairs)),
                     (cookies_of(browser) if cookies else []) + data.draw(extra_headers))
    else:
        answer = _form_post(provider, browser, page, "/consent", pairs, data, cookies)
    assert_page(answer, provider, allowed=(redirect,))


LOGOUT_NAMES = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "ui_locales", "logout_hint",
                "confirm", "csrf_token")


@pytest.fixture(scope="module")
def logout_browser(provider, agency):
    client_id, secret, redirect, _ = agency
    browser = provider.flow()
    result = browser.login(client_id, redirect, *provider.add_citizen())
    id_token = browser.exchange(client_id, secret, redirect, result["code"]).json()["id_token"]
    confirm = browser.get(f"{provider.url}/logout?client_id={client_id}")
    assert 'name="confirm"' in confirm.text
    return browser, id_token, csrf_token(confirm.text)


@FUZZ
@given(data=st.data(), path=st.sampled_from(["/logout", "/logout", "/logout/confirm"]),
       method=st.sampled_from(["GET", "POST"]), cookies=st.booleans())
def test_logout_never_redirects_to_an_unregistered_uri(provider, agency, logout_browser, data, path, method,
                                                       cookies):
    client_id, _, redirect, bye = agency
    browser, id_token, csrf = logout_browser
    base = [("client_id", client_id), ("post_logout_redirect_uri",
                                       data.draw(st.sampled_from([bye, bye + "/", bye + "?x", "https://evil.example/",
                                                                  redirect, bye.upper()]))),
            ("state", "s"), ("confirm", "1"), ("csrf_token", csrf)]
    if data.draw(st.booleans()):
        base.append(("id_token_hint", data.draw(st.sampled_from([id_token, id_token[:-4] + "AAAA", "a.b.c",
                                                                 "eyJhbGciOiJub25lIn0.e30."]))))
    pairs = data.draw(mutated(base, LOGOUT_NAMES))
    headers = (cookies_of(browser) if cookies else []) + data.draw(extra_headers)
    if method == "GET":
        answer = raw(provider, "GET", path.encode() + b"?" + data.draw(encoded(pairs)), headers)
    else:
        body, ctype = data.draw(body_of(pairs))
        answer = raw(provider, "POST", path, headers + ctype, body)
    assert_page(answer, provider, allowed=(bye,))
    if answer.location and not answer.location.startswith("/"):
        assert answer.location.split("?")[0] == bye, str(answer)


ACCOUNT_PATHS = ["/account", "/account/authenticator", "/account/services", "/account/services/withdraw",
                 "/account/", "/account/%ff", "/account/..%2f..%2fetc", "/account/services/%00", "/account//services"]


@FUZZ
@given(data=st.data(), path=st.sampled_from(ACCOUNT_PATHS), method=st.sampled_from(["GET", "POST", "POST"]),
       cookies=st.booleans())
def test_account_pages_refuse_hostile_input_with_a_page(provider, signed_in, agency, data, path, method, cookies):
    browser = signed_in[0]
    account = browser.get(f"{provider.url}/account/services")
    csrf = csrf_token(account.text) if 'name="csrf_token"' in account.text else "none"
    base = [("csrf_token", csrf), ("otp", "123456"), ("client_id", "not-a-client")]
    pairs = data.draw(mutated(base, ("csrf_token", "otp", "client_id", "enrolled", "withdrawn")))
    headers = (cookies_of(browser) if cookies else []) + data.draw(extra_headers)
    if method == "GET":
        answer = raw(provider, "GET", path.encode() + b"?" + data.draw(encoded(pairs)), headers)
    else:
        body, ctype = data.draw(body_of(pairs))
        answer = raw(provider, "POST", path, headers + ctype, body)
    assert_page(answer, provider)


# ---- anything, anywhere -------------------------------------------------------------------------------

EVERY_PATH = ["/", "/authorize", "/authorize/resume", "/token", "/userinfo", "/revoke", "/introspect", "/jwks",
              "/.well-known/openid-configuration", "/login", "/login/code", "/login/resend", "/logout",
              "/logout/confirm", "/consent", "/account", "/account/authenticator", "/account/services",
              "/account/services/withdraw", "/healthz", "/static/x", "/nope"]
PROTOCOL = ("/token", "/userinfo", "/jwks", "/.well-known/", "/revoke", "/introspect")
RAW_TARGET_JUNK = [b"?%zz", b"?%", b"?a=%ff%fe%00", b"?\xff\xfe=\xc3", b"?a=1&a=2&a=3", b"?r=%00", b"%2f..%2f..",
                   b"/%ff", b";jsessionid=1", b"?" + b"a=b&" * 500, b"?r=" + b"x" * 20_000, b"#frag", b"?a=\x7f"]


@FUZZ
@given(path=st.sampled_from(EVERY_PATH), junk=st.sampled_from(RAW_TARGET_JUNK),
       method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "HEAD"]),
       host=st.sampled_from([None, None, b"evil.example", b"", b"127.0.0.1:1\xff", b"\xff", b"x:y:z", b"[::1"]),
       data=st.data())
def test_any_path_method_host_and_target_bytes(provider, path, junk, method, host, data):
    body = None
    headers = data.draw(authorization()) + data.draw(extra_headers)
    if method in ("POST", "PUT", "PATCH"):
        body, ctype = data.draw(body_of(data.draw(mutated([], ("token", "code", "r", "otp")))))
        headers += ctype
    answer = raw(provider, method, path.encode() + junk, headers, body, host=host)
    assert answer.status < 500, str(answer)
    if answer.status in SERVER_LIMITS or method == "HEAD":
        return
    if path.startswith(PROTOCOL) and answer.status >= 400:
        assert_protocol(answer, RFC6749 | RFC6750 | RFC7009)
    elif 300 <= answer.status < 400:
        assert _redirect_ok(answer.location or "", provider, ()), str(answer)
    elif answer.status >= 400:
        assert "text/html" in answer.content_type, str(answer)


@pytest.mark.parametrize("host", [b"a" * 64, b"a" * 300, b"ex..ample", b"127.0.0.1..:1"])
def test_an_unusable_host_header_is_a_400_page(provider, host):
    for path in ("/", "/authorize", "/login", "/token"):
        answer = raw(provider, "GET", path, host=host)
        assert 400 <= answer.status < 500, (path, str(answer))


def test_oversized_fields_and_headers_are_refused_not_crashed(provider, agency, signed_in):
    """100 KB in a form field, a query, a bearer token, a cookie: a 4xx everywhere, JSON for the
    protocol endpoints the app itself answers."""
    client_id, secret, redirect, _ = agency
    huge = "x" * HUGE
    form = [(b"Content-Type", b"application/x-www-form-urlencoded")]
    for path in ("/token", "/revoke", "/introspect", "/userinfo"):
        answer = raw(provider, "POST", path, form + [(b"Authorization", _bytes(basic(client_id, secret)))],
                     _encode([("token", huge), ("code", huge), ("access_token", huge)]))
        assert answer.status == 413 and answer.json()["error"] == "invalid_request", (path, str(answer))
    for path in ("/authorize", "/login?r=x", "/login/code?r=x", "/logout", "/logout/confirm", "/consent?r=x",
                 "/account/services/withdraw"):
        answer = raw(provider, "POST", path, form + cookies_of(signed_in[0]), _encode([("x", huge)]))
        assert answer.status in (400, 413) and "text/html" in answer.content_type, (path, str(answer))
    for target in (b"/authorize?state=" + b"x" * HUGE, b"/userinfo?access_token=" + b"x" * HUGE):
        assert 400 <= raw(provider, "GET", target).status < 500
    for header in ((b"Authorization", b"Bearer " + b"a" * HUGE), (b"Cookie", b"idp_sso=" + b"a" * HUGE)):
        answer = raw(provider, "GET", "/userinfo", [header])
        assert 400 <= answer.status < 500, str(answer)
    # Large but within the server's header limits: the app itself answers, in JSON.
    answer = raw(provider, "GET", "/userinfo", [(b"Authorization", b"Bearer " + b"a" * 30_000)])
    assert answer.status == 401 and answer.json()["error"] == "invalid_token", str(answer)
