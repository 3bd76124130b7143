"""National IDs, mobile numbers and settings: the parsers people's typing goes through."""
from __future__ import annotations

import pytest

from idp.citizens.national_id import (
    InvalidMobile,
    InvalidNationalId,
    check_digit,
    make_national_id,
    mask_mobile,
    parse_mobile,
    parse_national_id,
)
from idp.platform.settings import SCHEMA, ConfigError, example_toml, load_settings

SECRET = {"server": {"secret_key": "s" * 40}}


@pytest.mark.parametrize("nid", ["0012345679", "0023456787", "1234567891"])
def test_valid_national_ids(nid):
    assert parse_national_id(nid) == nid


@pytest.mark.parametrize("first_nine,check", [
    ("001234567", 9),  # s = 112, r = 2 -> 11 - 2
    ("000000001", 9),  # s = 2, r = 2 -> 9
    ("001000010", 0),  # s = 8 + 3 = 11, r = 0 -> 0
    ("001000100", 1),  # s = 8 + 4 = 12, r = 1 -> 1
    ("000100010", 1),  # s = 7 + 3 = 10, r = 10 -> 11 - 10
    ("123456789", 1),  # s = 10+18+24+28+30+30+28+24+18 = 210, r = 1 -> 1
])
def test_check_digit_rule(first_nine, check):
    # s = sum(d_i * (10 - i)); r = s % 11; check = r if r < 2 else 11 - r (values worked by hand)
    assert check_digit(first_nine) == check
    assert make_national_id(first_nine) == first_nine + str(check)
    wrong = first_nine + str((check + 1) % 10)
    with pytest.raises(InvalidNationalId):
        parse_national_id(wrong)


@pytest.mark.parametrize("text", ["0012345678", "001234567", "00123456790", "1111111111", "", "abcdefghij",
                                  "٠٠١٢٣٤٥٦٧٨", "0" * 70, "00123456７9"])
def test_invalid_national_ids(text):
    with pytest.raises(InvalidNationalId):
        parse_national_id(text)


def test_digits_in_every_script_and_separators():
    assert parse_national_id("۰۰۱۲۳۴۵۶۷۹") == "0012345679"
    assert parse_national_id("٠٠١٢٣٤٥٦٧٩") == "0012345679"
    assert parse_national_id(" 001-234567-9 ") == "0012345679"
    assert parse_national_id("۰۰۱٢٣٤567۹") == "0012345679"  # mixed scripts are still digits


@pytest.mark.parametrize("typed", ["09121234567", "9121234567", "+989121234567", "00989121234567",
                                   "۰۹۱۲۱۲۳۴۵۶۷", "0912 123 4567", "\u200e+98 912-123-4567"])
def test_mobile_forms(typed):
    assert parse_mobile(typed) == "+989121234567"


@pytest.mark.parametrize("typed", ["02112345678", "0912123456", "+9891212345678", "+14155550100", "", "0912abc4567"])
def test_invalid_mobiles(typed):
    with pytest.raises(InvalidMobile):
        parse_mobile(typed)


def test_mask_mobile():
    assert mask_mobile("+989121234567") == "0912***4567"


def test_settings_defaults_and_env_override():
    s = load_settings(None, env={"IDP_STORE_URL": "redis://127.0.0.1:6379/3", "IDP_LIMITS_ENABLED": "false",
                                 "IDP_SERVER_SECRET_KEY": "k" * 40, "IDP_TOKENS_CODE_TTL": "30"})
    assert s.store.url == "redis://127.0.0.1:6379/3"
    assert s.limits.enabled is False and s.tokens.code_ttl == 30
    assert s.database.url.startswith("sqlite:///")


def test_file_then_env(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nsecret_key = "%s"\nissuer = "https://login.example.ir"\n[sms]\nbackend = "file"\n'
                    % ("x" * 40))
    s = load_settings(path, env={"IDP_SMS_BACKEND": "console"})
    assert s.server.issuer == "https://login.example.ir" and s.sms.backend == "console" and s.is_https


@pytest.mark.parametrize("env,expected", [
    ({}, "[server] secret_key: missing"),
    ({"IDP_SERVER_SECRET_KEY": "short"}, "[server] secret_key: must be at least 32"),
    ({"IDP_SERVER_ISSUER": "http://login.example.ir"}, "[server] issuer: must be https"),
    ({"IDP_SERVER_ISSUER": "https://login.example.ir/"}, "[server] issuer: must not end"),
    ({"IDP_STORE_URL": "mysql://x"}, "[store] url: must be memory://, a redis:// URL or redis+sentinel://"),
    ({"IDP_STORE_URL": "redis+sentinel://s1:26379"}, "[store] url: must name the service"),
    ({"IDP_DATABASE_REPLICA_URL": "sqlite:///r.db"}, "[database] replica_url: must be empty or postgresql://"),
    ({"IDP_SMS_BACKEND": "pigeon"}, "[sms] backend: must be one of"),
    ({"IDP_TOKENS_CODE_TTL": "soon"}, "[tokens] code_ttl: must be an integer"),
    ({"IDP_LIMITS_ENABLED": "maybe"}, "[limits] enabled: must be true or false"),
    ({"IDP_STATS_TIMEZONE": "Mars/Olympus"}, "[stats] timezone: must be an IANA time zone"),
])
def test_bad_settings_name_the_key(env, expected):
    if "IDP_SERVER_SECRET_KEY" not in env and "secret_key" not in expected:
        env = {**env, "IDP_SERVER_SECRET_KEY": "k" * 40}
    with pytest.raises(ConfigError) as info:
        load_settings(None, env=env)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_unknown_keys_and_bad_toml(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nissuer = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, env={})
    typo = tmp_path / "typo.toml"
    typo.write_text('[server]\nisuer = "x"\n')
    with pytest.raises(ConfigError, match=r"\[server\] isuer: unknown key"):
        load_settings(typo, env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml", env={})


def test_example_config_is_current_and_complete():
    from pathlib import Path

    committed = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    assert committed == example_toml(), "regenerate it: idp config example > config.example.toml"
    for section, keys in SCHEMA.items():
        assert f"[{section}]" in committed
        for key in keys:
            assert f"\n{key} = " in committed


def test_secrets_are_masked_and_derived_keys_differ():
    s = load_settings(None, env={}, overrides=SECRET)
    assert s.as_dict()["server"]["secret_key"] == "********"
    assert s.derived_key("a") != s.derived_key("b") and len(s.derived_key("a")) == 32


def test_derived_keys_keep_their_bytes():
    """Every pairwise subject, fingerprint and session key is derived from the master secret: the
    derivation (HKDF-SHA256, salt ``idp-hkdf-salt-v1``, info = purpose) must never change its
    output. The value below was computed by the first, hand-written HKDF."""
    s = load_settings(None, env={}, overrides={"server": {"secret_key": "x" * 40}})
    assert s.derived_key("pairwise-sub").hex() == "784dd7accf86670f8ac08840e4d3fb868347736ba3d227034ea76d4de2f17785"
    assert s.derived_key("pairwise-sub", 16) == s.derived_key("pairwise-sub")[:16]


def test_idp_serve_listens_where_bind_says():
    from pathlib import Path

    from idp.cli.serve import listen_address

    assert listen_address("127.0.0.1:5000") == {"address": "127.0.0.1", "port": 5000}
    assert listen_address("[::]:8443") == {"address": "::", "port": 8443}
    assert listen_address("unix:/run/idp/idp.sock") == {"uds": Path("/run/idp/idp.sock")}


def test_turns_go_first_come_first_served():
    """web.Turns (what BodyFirst runs requests by): a turn given back goes to the longest waiter,
    never back to the pool for a newcomer to take."""
    import threading as th
    import time

    from idp.platform.web import Turns

    turns = Turns(1)
    order = []
    turns.__enter__()  # the one turn, held

    def take(name):
        with turns:
            order.append(name)

    waiting = []
    for name in ("first", "second", "third"):
        t = th.Thread(target=take, args=(name,))
        t.start()
        waiting.append(t)
        deadline = time.monotonic() + 5
        while len(turns._waiting) < len(waiting) and time.monotonic() < deadline:
            time.sleep(0.001)  # until this one waits (real threads)
    assert len(turns._waiting) == 3
    turns.__exit__(None, None, None)
    assert turns._free == 0  # handed over, not freed
    for t in waiting:
        t.join(5)
    assert order == ["first", "second", "third"]
    assert turns._free == 1 and not turns._waiting


def test_a_draining_worker_asks_every_client_to_close_its_connection():
    """web.BodyFirst: while a graceful restart replaces this worker (its pid among the draining
    ones the serving master shares), every answer says Connection: close, so no kept-alive
    connection is idle on it when it stops; before and after, connections are kept."""
    import ctypes
    import multiprocessing
    import os

    from idp.platform.web import BodyFirst

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    draining = multiprocessing.get_context("fork").RawArray(ctypes.c_long, 4)
    served = BodyFirst(app, 1, draining=draining)

    def headers() -> dict:
        seen = {}
        served({"REQUEST_METHOD": "GET"}, lambda status, hs, exc_info=None: seen.update(hs))
        return seen

    assert "Connection" not in headers()
    draining[2] = os.getpid() + 1  # another worker is being replaced
    assert "Connection" not in headers()
    draining[1] = os.getpid()
    assert headers()["Connection"] == "close"
    draining[:] = [0] * 4
    assert "Connection" not in headers()
