"""Sending one-time codes by SMS: a small protocol and its senders.

``console`` prints, ``file`` appends one JSON object per message to the outbox (the contract
outside test suites read codes from), ``http`` hands the message to a gateway: a generic JSON
webhook or Kavenegar's verify/lookup OTP API. A sender either returns (the gateway accepted
the message) or raises :class:`SmsError`; it never logs the code or the full mobile number,
and the Kavenegar API key (which that API puts in the URL path) never reaches a log line or
an exception.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter

from ..citizens.national_id import mask_mobile
from ..platform.settings import ConfigError

log = logging.getLogger(__name__)

KAVENEGAR_URL = "https://api.kavenegar.com"


class SmsError(Exception):
    """The message could not be handed to the gateway; the challenge stays usable."""


class SmsSender(Protocol):
    """Anything that can deliver a one-time code to a mobile number."""

    def send(self, to: str, code: str, text: str) -> None:
        """Deliver ``text`` (which contains ``code``) to ``to`` (E.164) or raise SmsError."""


def message_text(code: str, issuer: str) -> str:
    """The SMS body: Persian first, and a last line in the WebOTP format so phones can autofill."""
    host = urlsplit(issuer).hostname
    return f"کد ورود شما به درگاه ملی: {code}\nاین کد را به کسی ندهید.\n\n@{host} #{code}"


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class ConsoleSender:
    """Prints messages on standard output (development)."""

    def send(self, to: str, code: str, text: str) -> None:
        print(f"[sms] to {mask_mobile(to)} ({to}): code {code}", file=sys.stdout, flush=True)


class FileSender:
    """Appends one JSON line per message to the outbox; safe across processes (flock)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def send(self, to: str, code: str, text: str) -> None:
        line = json.dumps({"to": to, "code": code, "text": text, "sent_at": _now_iso()}, ensure_ascii=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    fh.write(line + "\n")
                    fh.flush()  # readers see it now; no fsync: an outbox for tests and
                    # development need not survive a crash, and fsync stalls on a busy disk
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            raise SmsError(f"outbox not writable: {exc.strerror}") from exc


class _Outcome:
    """What one attempt came to: accepted, or a reason that is safe to log and maybe worth a retry."""

    def __init__(self, ok: bool, reason: str = "", transient: bool = False):
        self.ok, self.reason, self.transient = ok, reason, transient


ACCEPTED = _Outcome(True)


class _Redact(logging.Filter):
    """Blanks registered secrets in urllib3's records: at DEBUG it logs every request line,
    and Kavenegar's request line carries the API key."""

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            if any(s in message for s in self.secrets):
                for s in self.secrets:
                    message = message.replace(s, "***")
                record.msg, record.args = message, None
        return True


_REDACT = _Redact()
logging.getLogger("urllib3.connectionpool").addFilter(_REDACT)


class HttpSender:
    """Bounded, retrying delivery over HTTP; subclasses speak one gateway's protocol in ``attempt``.

    Only transient failures (5xx, timeouts, connection errors) are retried, at most ``retries``
    times with a short jittered backoff, and the whole send has a deadline, so a slow gateway
    holds its caller for a bounded time. Each thread of each process keeps its own
    ``requests.Session``: connections are reused, never shared across a fork.
    """

    provider = "http"
    max_body = 64 * 1024

    def __init__(self, timeout_ms: int, retries: int, backoff: float = 0.2):
        self.timeout = timeout_ms / 1000
        self.retries = retries
        self.backoff = backoff
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None or self._local.pid != os.getpid():
            session = requests.Session()
            # Retries are ours (bounded, logged, transient only); urllib3 must not add its own.
            adapter = HTTPAdapter(max_retries=0, pool_connections=2, pool_maxsize=2)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            session.headers.update({"User-Agent": "idp-sms/1", "Accept": "application/json"})
            self._local.session, self._local.pid = session, os.getpid()
        return session

    def send(self, to: str, code: str, text: str) -> None:
        backoffs = [min(self.backoff * 2 ** n, 2.0) for n in range(self.retries)]
        deadline = time.monotonic() + self.timeout * (1 + self.retries) + sum(backoffs)
        attempts = 1 + self.retries
        outcome, tried = _Outcome(False, "no time left"), 0
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0.01:
                break
            tried = attempt
            timeout = min(self.timeout, remaining)
            outcome = self.attempt(to, code, text, (timeout, timeout), deadline)
            if outcome.ok:
                log.info("sms via %s to %s: accepted (attempt %d)", self.provider, mask_mobile(to), attempt)
                return
            if not outcome.transient or attempt == attempts:
                break
            delay = backoffs[attempt - 1] * random.uniform(0.5, 1.0)
            log.warning("sms via %s to %s: attempt %d of %d failed (%s); retrying", self.provider,
                        mask_mobile(to), attempt, attempts, outcome.reason)
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
        log.warning("sms via %s to %s: failed after %d attempt(s): %s", self.provider, mask_mobile(to),
                    tried, outcome.reason)
        raise SmsError(f"{self.provider}: message to {mask_mobile(to)} not accepted after {tried} "
                       f"attempt(s): {outcome.reason}")

    def attempt(self, to: str, code: str, text: str, timeout: tuple[float, float], deadline: float) -> _Outcome:
        """One try: send and judge the reply."""
        raise NotImplementedError

    def _exchange(self, method: str, url: str, timeout: tuple[float, float], deadline: float,
                  **kwargs) -> tuple[int, bytes] | _Outcome:
        """One HTTP exchange: (status, body), or the outcome of a transport failure.

        No exception escapes: requests' messages quote the URL, which for Kavenegar holds the
        key, so failures are described here by kind only. The body is read against the deadline,
        because the read timeout bounds each socket read, not the whole reply.
        """
        try:
            with self._session().request(method, url, timeout=timeout, allow_redirects=False, stream=True,
                                         **kwargs) as resp:
                body = bytearray()
                for chunk in resp.iter_content(8192):
                    body += chunk
                    if len(body) > self.max_body:
                        return _Outcome(False, f"HTTP {resp.status_code} with an oversized reply")
                    if time.monotonic() > deadline:
                        return _Outcome(False, "reply too slow", transient=True)
                return resp.status_code, bytes(body)
        except requests.exceptions.Timeout:
            failure = _Outcome(False, "timed out", transient=True)
        except requests.exceptions.SSLError:
            failure = _Outcome(False, "TLS failure")
        except requests.exceptions.ConnectionError:  # also a read timeout while streaming the body
            failure = _Outcome(False, "connection failed", transient=True)
        except requests.exceptions.RequestException as exc:
            failure = _Outcome(False, f"request failed ({exc.__class__.__name__})")
        return failure


class WebhookSender(HttpSender):
    """POSTs the DESIGN §5 message object as JSON to one URL; any 2xx means accepted."""

    provider = "webhook"

    def __init__(self, url: str, token: str | None, timeout_ms: int, retries: int, backoff: float = 0.2):
        super().__init__(timeout_ms, retries, backoff)
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def attempt(self, to, code, text, timeout, deadline):
        result = self._exchange("POST", self.url, timeout, deadline, headers=self.headers,
                                json={"to": to, "code": code, "text": text, "sent_at": _now_iso()})
        if isinstance(result, _Outcome):
            return result
        status, _ = result
        if 200 <= status < 300:
            return ACCEPTED
        return _Outcome(False, f"HTTP {status}", transient=status >= 500)


# What Kavenegar's return.status codes mean, for the operator reading the log.
KAVENEGAR_STATUS = {
    400: "parameters incomplete", 401: "account disabled", 403: "invalid API key",
    411: "invalid receptor", 418: "insufficient credit", 422: "invalid characters",
    424: "template not found", 426: "plan does not allow this method", 428: "call not possible for this code",
    431: "token format invalid for the template", 432: "template has no %token% parameter",
}


class KavenegarSender(HttpSender):
    """Kavenegar's verify/lookup: the gateway fills a pre-approved template with the code.

    ``POST {base}/v1/{api_key}/verify/lookup.json`` with the form fields ``receptor`` (the
    mobile as 09xxxxxxxxx), ``token`` (the code) and ``template``. The reply is
    ``{"return": {"status": 200, "message": ...}, "entries": [...]}``; any other status is a
    refusal (the HTTP status mirrors it) and is not retried. POST rather than GET keeps the
    code out of URLs, which proxies and access logs record.
    """

    provider = "kavenegar"

    def __init__(self, base_url: str, api_key: str, template: str, timeout_ms: int, retries: int,
                 backoff: float = 0.2):
        super().__init__(timeout_ms, retries, backoff)
        self.template = template
        self._url = f"{base_url.rstrip('/')}/v1/{quote(api_key, safe='')}/verify/lookup.json"
        _REDACT.secrets.update({api_key, quote(api_key, safe="")})

    def __repr__(self) -> str:
        return f"KavenegarSender(template={self.template!r})"

    def attempt(self, to, code, text, timeout, deadline):
        if not (to.startswith("+98") and len(to) == 13 and to[1:].isdigit()):
            return _Outcome(False, "receptor is not an Iranian mobile")
        form = {"receptor": "0" + to[3:], "token": code, "template": self.template}
        result = self._exchange("POST", self._url, timeout, deadline, data=form)
        if isinstance(result, _Outcome):
            return result
        http_status, body = result
        if http_status >= 500:
            return _Outcome(False, f"HTTP {http_status}", transient=True)
        try:
            status = json.loads(body)["return"]["status"]
        except (ValueError, TypeError, KeyError):
            return _Outcome(False, f"HTTP {http_status} without a Kavenegar reply")
        if http_status == 200 and status == 200:
            return ACCEPTED
        meaning = KAVENEGAR_STATUS.get(status, "refused")
        return _Outcome(False, f"status {status} ({meaning})")


def build_sender(settings) -> SmsSender:
    """The sender the configuration names; ConfigError when the http backend lacks what it needs."""
    sms = settings.sms
    if sms.backend == "file":
        return FileSender(sms.outbox)
    if sms.backend == "console":
        return ConsoleSender()
    if sms.http_provider == "kavenegar":
        if not sms.http_token:
            raise ConfigError('[sms] http_token: missing (the Kavenegar API key; set IDP_SMS_HTTP_TOKEN)')
        return KavenegarSender(sms.http_url or KAVENEGAR_URL, sms.http_token, sms.http_template,
                               sms.http_timeout_ms, sms.http_retries)
    if not sms.http_url:
        raise ConfigError('[sms] http_url: missing (backend "http" with http_provider "webhook" needs the URL)')
    return WebhookSender(sms.http_url, sms.http_token or None, sms.http_timeout_ms, sms.http_retries)
