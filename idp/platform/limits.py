"""Named limits from the ``[limits]`` table, enforced through the store.

Keys are HMAC fingerprints, never raw national IDs, mobiles or addresses. The national-ID
limits are counted per national ID + mobile *pair*: for the citizen that is exactly "per
national ID" (one mobile is theirs), and it makes a wrong mobile behave exactly like the
right one, so no limit tells a stranger whether a pair is registered, and a stranger who
does not know the mobile cannot use up or lock the owner's codes. The per-mobile budget
(several citizens may share a number) is spent only by codes actually sent, to a registered
pair, so knowing a mobile number alone spends nothing either.

Wrong codes in a row start escalating cool-offs, never a permanent lock, and the run is
capped (NIST SP 800-63B §5.2.2: at most 100 consecutive failures) until it is forgotten.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import audit, metrics
from .settings import parse_rate, settings
from .store import Window, store


class RateLimited(Exception):
    """A named limit is reached; ``retry_after`` seconds to wait."""

    def __init__(self, limit: str, retry_after: int, cooloff: bool = False):
        super().__init__(f"{limit}: wait {retry_after}s")
        self.limit = limit
        self.retry_after = retry_after
        self.cooloff = cooloff


@dataclass(frozen=True)
class Keys:
    """The fingerprints one login attempt is limited by."""

    ip: str
    pair: str
    mobile: str

    @classmethod
    def of(cls, national_id: str, mobile: str, ip: str) -> "Keys":
        return cls(ip=audit.fingerprint("ip", ip), pair=audit.fingerprint("pair", f"{national_id}|{mobile}"),
                   mobile=audit.fingerprint("mobile", mobile))


def _enabled() -> bool:
    return settings.limits.enabled


def _window(name: str, fp: str) -> Window:
    count, period = parse_rate(getattr(settings.limits, name))
    return Window(name, fp, count, period)


def _refused(name: str, wait: int) -> None:
    audit.record("rate_limited", limit=name, wait=wait)
    metrics.rate_limited(name)
    raise RateLimited(name, wait)


def _hit(name: str, fp: str) -> None:
    window = _window(name, fp)
    wait = store.hit_window(name, fp, window.count, window.period)
    if wait:
        _refused(name, wait)


def check_ip(name: str) -> None:
    """Count one request from this client's address against a per-IP limit."""
    if _enabled():
        _hit(name, audit.fingerprint("ip", audit.client_ip()))


def check_cooloff(pair_fp: str) -> None:
    """Refuse while a cool-off (or the failure cap) is in force for this pair."""
    if not _enabled():
        return
    wait = store.cooloff_left(pair_fp)
    if wait:
        raise RateLimited("cooloff", wait, cooloff=True)


def check_send(keys: Keys, sms: bool = True) -> None:
    """Before a login starts (or a code is resent): the pair's cool-off and send windows, then,
    when a text message is asked for, whether the mobile's window has room.

    The pair's windows are spent by every start, whether or not the pair is registered: only
    someone who knows the pair can spend them. The mobile's window is only *read* here; it is
    spent by a code actually sent to a registered pair (``sent_window``), so a stranger who
    knows nothing but a mobile number cannot use up its owner's budget. Its answer is the same
    for every national ID typed with that mobile, so it tells nothing about who is registered.
    """
    if not _enabled():
        return
    check_cooloff(keys.pair)
    _hit("codes_per_national_id", keys.pair)
    _hit("codes_per_national_id_daily", keys.pair)
    if sms:
        window = _window("codes_per_mobile", keys.mobile)
        wait = store.window_wait(window.limit, window.fp, window.count, window.period)
        if wait:
            _refused(window.limit, wait)


def check_start(keys: Keys, sms: bool = True) -> None:
    """``check_ip("starts_per_ip")`` then ``check_send(keys, sms)``, with the same outcome (what
    is counted and what is refused, in that order) and in one store round trip."""
    if not _enabled():
        return
    windows = [_window("starts_per_ip", keys.ip), _window("codes_per_national_id", keys.pair),
               _window("codes_per_national_id_daily", keys.pair)]
    hits = store.hit_windows(windows, cool_fp=keys.pair, look=_window("codes_per_mobile", keys.mobile) if sms else None)
    if hits.waits[0]:  # the address: nothing of the pair is counted
        hits.take_back(1)
        _refused(windows[0].limit, hits.waits[0])
    if hits.cool:
        hits.take_back(1)
        raise RateLimited("cooloff", hits.cool, cooloff=True)
    for i in (1, 2):
        if hits.waits[i]:
            hits.take_back(i + 1)
            _refused(windows[i].limit, hits.waits[i])
    if hits.look_wait:
        _refused("codes_per_mobile", hits.look_wait)


def check_code_ip(pair_fp: str) -> None:
    """``check_ip("code_checks_per_ip")`` then ``check_cooloff(pair_fp)``, in one round trip."""
    if not _enabled():
        return
    window = _window("code_checks_per_ip", audit.fingerprint("ip", audit.client_ip()))
    hits = store.hit_windows([window], cool_fp=pair_fp)
    if hits.waits[0]:
        _refused(window.limit, hits.waits[0])
    if hits.cool:
        raise RateLimited("cooloff", hits.cool, cooloff=True)


def sent_window(keys: Keys) -> Window | None:
    """The window a code actually sent to this pair's mobile is counted in (None: limits off)."""
    return _window("codes_per_mobile", keys.mobile) if _enabled() else None


def record_wrong_code(pair_fp: str, subject_fp: str | None) -> int:
    """Count a wrong code for the pair; start a cool-off at each run of failures. Returns the wait."""
    if not _enabled():
        return 0
    lim = settings.limits
    run = store.count_failure(pair_fp, lim.failure_memory)
    if run >= lim.max_consecutive_failures:
        store.start_cooloff(pair_fp, lim.failure_memory)
        audit.record("failures_capped", subject_fp=subject_fp, run=run, wait=lim.failure_memory)
        metrics.lock("failure_cap")
        return lim.failure_memory
    if run % lim.failures_before_cooloff == 0:
        steps = [int(x) for x in lim.cooloff_seconds.split(",")]
        wait = steps[min(run // lim.failures_before_cooloff, len(steps)) - 1]
        store.start_cooloff(pair_fp, wait)
        audit.record("cooloff_started", subject_fp=subject_fp, run=run, wait=wait)
        metrics.lock("cooloff")
        return wait
    return 0


def record_right_code(pair_fp: str) -> None:
    """A right code ends the run of wrong ones."""
    store.clear_failures(pair_fp)
