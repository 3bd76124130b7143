"""SMS backends against a real local HTTP server that plays the gateway (no HTTP mocks).

The server speaks the generic JSON webhook and Kavenegar's verify/lookup protocol; each test
scripts its replies and reads back the requests it recorded.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from urllib.parse import parse_qs

import pytest

from idp.login.sms import ConsoleSender, FileSender, KavenegarSender, SmsError, WebhookSender, build_sender
from idp.platform.settings import ConfigError, load_settings

MOBILE = "+989121234567"
CODE = "493021"
TEXT = "کد ورود شما به درگاه ملی: 493021"
API_KEY = "4A7B2C3D-SECRET-KEY-6F5E4D3C2B1A"
SECRET = "s" * 40


def kavenegar_reply(status: int, message: str = "تایید شد") -> dict:
    entries = [{"messageid": 8792343, "message": TEXT, "status": 5, "statustext": "ارسال به مخابرات",
                "sender": "10004346", "receptor": "09121234567", "date": 1356619709, "cost": 120}]
    return {"return": {"status": status, "message": message}, "entries": entries if status == 200 else None}


def form(request: dict) -> dict:
    """Kavenegar parameters, from the form body or the query string."""
    fields = parse_qs(request["body"].decode()) if request["body"] else request["query"]
    return {k: v[0] for k, v in fields.items()}


# ---- webhook ----------------------------------------------------------------------------------

def test_webhook_posts_the_message_as_json_with_the_bearer_token(gateway):
    gateway.reply((204, ""))
    WebhookSender(gateway.url + "/sms", "hook-token", timeout_ms=2000, retries=2).send(MOBILE, CODE, TEXT)
    [req] = gateway.requests
    assert req["method"] == "POST" and req["path"] == "/sms"
    assert req["headers"]["Authorization"] == "Bearer hook-token"
    assert req["headers"]["Content-Type"] == "application/json"
    body = json.loads(req["body"])
    assert set(body) == {"to", "code", "text", "sent_at"}
    assert (body["to"], body["code"], body["text"]) == (MOBILE, CODE, TEXT)
    assert dt.datetime.fromisoformat(body["sent_at"]).tzinfo is not None


def test_webhook_without_token_sends_no_authorization_and_reuses_the_connection(gateway):
    gateway.reply((200, {"ok": True}))
    sender = WebhookSender(gateway.url, None, timeout_ms=2000, retries=0)
    sender.send(MOBILE, CODE, TEXT)
    sender.send(MOBILE, "111111", TEXT)
    first, second = gateway.requests
    assert "Authorization" not in first["headers"]
    assert first["port"] == second["port"], "the session should keep the connection alive"


def test_webhook_500_then_200_is_retried_and_succeeds(gateway):
    gateway.reply((500, "busy"), (200, {"ok": True}))
    WebhookSender(gateway.url, None, timeout_ms=2000, retries=2, backoff=0.01).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 2
    assert json.loads(gateway.requests[0]["body"])["code"] == json.loads(gateway.requests[1]["body"])["code"]


def test_webhook_always_500_fails_after_exactly_one_plus_retries_attempts(gateway, caplog):
    gateway.reply((500, "down"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SmsError, match="after 3 attempt") as info:
        WebhookSender(gateway.url, None, timeout_ms=2000, retries=2, backoff=0.01).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 3
    assert "HTTP 500" in str(info.value)
    for said in (str(info.value), caplog.text):
        assert CODE not in said and "9121234567" not in said and "0912***4567" in said


def test_webhook_4xx_is_not_retried(gateway):
    gateway.reply((401, "no"))
    with pytest.raises(SmsError, match="HTTP 401"):
        WebhookSender(gateway.url, "wrong", timeout_ms=2000, retries=2, backoff=0.01).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 1


def test_a_slow_gateway_fails_within_a_bounded_time(gateway):
    gateway.reply((200, {"ok": True}, 3.0))
    sender = WebhookSender(gateway.url, None, timeout_ms=250, retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(SmsError, match="timed out|connection failed"):
        sender.send(MOBILE, CODE, TEXT)
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5, elapsed
    assert len(gateway.requests) == 2


def test_an_unreachable_gateway_is_an_sms_error():
    with pytest.raises(SmsError, match="connection failed"):
        WebhookSender("http://127.0.0.1:9", None, timeout_ms=500, retries=1, backoff=0.01).send(MOBILE, CODE, TEXT)


# ---- Kavenegar --------------------------------------------------------------------------------

def kavenegar(gateway, retries=2) -> KavenegarSender:
    return KavenegarSender(gateway.url, API_KEY, "idp-otp", timeout_ms=2000, retries=retries, backoff=0.01)


def test_kavenegar_lookup_sends_receptor_token_and_template(gateway, caplog):
    gateway.reply((200, kavenegar_reply(200)))
    caplog.set_level(logging.DEBUG)
    kavenegar(gateway).send(MOBILE, CODE, TEXT)
    [req] = gateway.requests
    assert req["path"] == f"/v1/{API_KEY}/verify/lookup.json"
    assert form(req) == {"receptor": "09121234567", "token": CODE, "template": "idp-otp"}
    assert CODE not in req["path"] and not req["query"], "the code travels in the body, not the URL"
    assert API_KEY not in caplog.text, "urllib3's debug request line must be redacted"


def test_kavenegar_credit_error_fails_without_retry_and_hides_the_key(gateway, caplog):
    gateway.reply((418, kavenegar_reply(418, "اعتبار حساب شما کافی نیست")))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SmsError, match="status 418") as info:
        kavenegar(gateway).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 1
    chain, exc = [], info.value
    while exc is not None:
        chain.append(repr(exc) + str(exc))
        exc = exc.__cause__ or exc.__context__
    assert all(API_KEY not in text for text in chain)
    assert API_KEY not in caplog.text and CODE not in caplog.text


def test_kavenegar_refusal_in_a_200_reply_is_a_failure(gateway):
    gateway.reply((200, kavenegar_reply(424, "template not found")))
    with pytest.raises(SmsError, match="status 424"):
        kavenegar(gateway).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 1


def test_kavenegar_503_then_200_succeeds(gateway):
    gateway.reply((503, "Service Unavailable"), (200, kavenegar_reply(200)))
    kavenegar(gateway).send(MOBILE, CODE, TEXT)
    assert len(gateway.requests) == 2


def test_kavenegar_key_is_not_in_transport_errors(caplog):
    caplog.set_level(logging.DEBUG)
    sender = KavenegarSender("http://127.0.0.1:9", API_KEY, "idp-otp", timeout_ms=500, retries=1, backoff=0.01)
    with pytest.raises(SmsError) as info:
        sender.send(MOBILE, CODE, TEXT)
    assert API_KEY not in str(info.value) and API_KEY not in repr(sender) and API_KEY not in caplog.text
    assert info.value.__cause__ is None and info.value.__context__ is None


# ---- file backend and configuration -----------------------------------------------------------

def test_file_backend_writes_the_design_json_line(tmp_path):
    outbox = tmp_path / "sub" / "outbox.jsonl"
    sender = FileSender(str(outbox))
    sender.send(MOBILE, CODE, TEXT)
    sender.send(MOBILE, "000111", TEXT)
    lines = outbox.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first) == ["to", "code", "text", "sent_at"]
    assert (first["to"], first["code"], first["text"]) == (MOBILE, CODE, TEXT)
    assert dt.datetime.fromisoformat(first["sent_at"]).utcoffset() == dt.timedelta(0)
    assert "کد ورود" in lines[0], "Persian text is written as UTF-8, not escaped"


def settings_with(**sms):
    return load_settings(None, env={}, overrides={"server": {"secret_key": SECRET}, "sms": sms})


def test_build_sender_picks_the_backend(tmp_path):
    assert isinstance(build_sender(settings_with()), ConsoleSender)
    assert isinstance(build_sender(settings_with(backend="file", outbox=str(tmp_path / "o"))), FileSender)
    hook = build_sender(settings_with(backend="http", http_url="https://sms.example.ir/hook", http_token="t",
                                      http_timeout_ms=1500, http_retries=1))
    assert isinstance(hook, WebhookSender) and hook.timeout == 1.5 and hook.retries == 1
    assert hook.headers == {"Authorization": "Bearer t"}
    kave = build_sender(settings_with(backend="http", http_provider="kavenegar", http_token=API_KEY))
    assert isinstance(kave, KavenegarSender) and kave.template == "idp-otp" and kave.retries == 2
    assert kave._url.startswith("https://api.kavenegar.com/v1/")


def test_http_backend_configuration_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"\[sms\] http_url: missing"):
        build_sender(settings_with(backend="http"))
    with pytest.raises(ConfigError, match=r"\[sms\] http_url: must be https"):
        settings_with(backend="http", http_url="http://sms.example.ir/hook")
    with pytest.raises(ConfigError, match=r"\[sms\] http_token: missing"):
        build_sender(settings_with(backend="http", http_provider="kavenegar"))
    with pytest.raises(ConfigError, match=r"\[sms\] http_provider: must be one of"):
        settings_with(http_provider="smpp")
    with pytest.raises(ConfigError, match=r"\[sms\] http_retries"):
        settings_with(http_retries=50)
    env = {"IDP_SMS_BACKEND": "http", "IDP_SMS_HTTP_URL": "http://127.0.0.1:8080/sms", "IDP_SMS_HTTP_TOKEN": "k"}
    s = load_settings(None, env=env, overrides={"server": {"secret_key": SECRET}})
    assert isinstance(build_sender(s), WebhookSender) and s.as_dict()["sms"]["http_token"] == "********"
