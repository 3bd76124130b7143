"""Sending one-time codes by SMS: a small protocol and its senders.

``console`` prints, ``file`` appends one JSON object per message to the outbox (the contract
outside test suites read codes from), ``http`` is a real gateway (a later issue).
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .national_id import mask_mobile


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


class ConsoleSender:
    """Prints messages on standard output (development)."""

    def send(self, to: str, code: str, text: str) -> None:
        print(f"[sms] to {mask_mobile(to)} ({to}): code {code}", file=sys.stdout, flush=True)


class FileSender:
    """Appends one JSON line per message to the outbox; safe across processes (flock)."""

    def __init__(self, path: str):
        self.path = Path(path)

    def send(self, to: str, code: str, text: str) -> None:
        line = json.dumps({"to": to, "code": code, "text": text,
                           "sent_at": dt.datetime.now(dt.timezone.utc).isoformat()}, ensure_ascii=False)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    fh.write(line + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            raise SmsError(f"outbox not writable: {exc.strerror}") from exc


def build_sender(settings) -> SmsSender:
    """The sender the configuration names."""
    backend = settings.sms.backend
    if backend == "file":
        return FileSender(settings.sms.outbox)
    if backend == "console":
        return ConsoleSender()
    raise SmsError(f"[sms] backend: {backend} is not available yet")
