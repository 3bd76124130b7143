"""Prometheus metrics (prometheus_client), served at ``/metrics`` to a scraper holding the token.

The counting hooks below are one-line calls from the modules where things happen (login.views,
login.codes, platform.limits, protocol.endpoints); they never raise, so metrics can never break a login.

=======================================  =====================================================
``idp_logins_total{method,result}``      authentications: method sms|totp; result success
                                         (a code or app code accepted), sso (a code issued from
                                         an existing session), wrong_code, locked (the wrong
                                         code that ended its challenge)
``idp_otp_codes_sent_total{result}``     SMS codes handed to the gateway: sent | failed
``idp_otp_wrong_codes_total{method}``    wrong one-time codes entered
``idp_lockouts_total{kind}``             challenge (ended by wrong codes), cooloff (started),
                                         failure_cap (the NIST cap on failures in a row reached)
``idp_rate_limited_total{limit}``        requests refused by a named ``[limits]`` limit
``idp_tokens_issued_total{grant}``       token responses issued, by grant_type
``idp_token_errors_total{grant}``        token requests refused, by grant_type
``idp_token_exchanges_total{...}``       token exchanges between agencies (RFC 8693), by
                                         ``from_agency`` and ``to_agency`` (client_ids; ``-``
                                         when not a registered agency) and ``outcome``
                                         (issued, or the error code)
``idp_request_duration_seconds``         histogram of request latency, by endpoint (the URL
                                         rule, so a bounded set) and HTTP method
``idp_unique_adults``                    gauge: unique adults who have ever authenticated
                                         (read from its counter row at each scrape: exact)
``idp_unique_citizens_today``            gauge: today's unique citizens (live estimate)
=======================================  =====================================================

The two gauges belong to higher layers (citizens, stats): they register a reader with
``gauge()`` (idp.stats.gauges, from create_app), which /metrics calls at each scrape; this
module imports nothing above idp.platform.

prometheus_client is imported inside the functions that use it, never at import time: it
chooses between single- and multiprocess values once, when first imported, from
``PROMETHEUS_MULTIPROC_DIR``, which ``idp serve`` sets (prepare_multiprocess) only after this
module is loaded.

``idp serve`` runs several worker processes: it turns on prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``; ``[metrics] multiproc_dir``, emptied at start), so a scrape of
any worker sums the counters and histograms of all of them, those of workers that have since
died or been replaced included (a counter never goes back). The two gauges are read from the
database and the store at scrape time, so they need no aggregation.
"""
from __future__ import annotations

import hmac
import logging
import os
import tempfile
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

from flask import Response, g, request

from .settings import ConfigError

log = logging.getLogger("idp.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_m: SimpleNamespace | None = None
_m_lock = threading.Lock()  # two threads of a worker must not both make (register) the metrics
#: The gauges read at each scrape: name -> (help text, reader), in the order they were registered.
_gauges: dict[str, tuple[str, Callable[[], float | None]]] = {}


def _metrics() -> SimpleNamespace:
    """The metric objects, made on first use (after PROMETHEUS_MULTIPROC_DIR is settled)."""
    global _m
    if _m is not None:
        return _m
    with _m_lock:
        if _m is not None:
            return _m
        from prometheus_client import Counter, Histogram  # not at import time: see the module docstring

        _m = SimpleNamespace(
            logins=Counter("idp_logins", "Authentications by method and result.", ["method", "result"]),
            codes=Counter("idp_otp_codes_sent", "SMS codes handed to the gateway, by outcome.", ["result"]),
            wrong=Counter("idp_otp_wrong_codes", "Wrong one-time codes entered.", ["method"]),
            locks=Counter("idp_lockouts", "Challenges ended, cool-offs started, failure caps reached.", ["kind"]),
            limited=Counter("idp_rate_limited", "Requests refused by a named rate limit.", ["limit"]),
            tokens=Counter("idp_tokens_issued", "Token responses issued, by grant type.", ["grant"]),
            token_errors=Counter("idp_token_errors", "Token requests refused, by grant type.", ["grant"]),
            exchanges=Counter("idp_token_exchanges", "Token exchanges between agencies, by pair and outcome.",
                              ["from_agency", "to_agency", "outcome"]),
            latency=Histogram("idp_request_duration_seconds", "Request latency by endpoint.", ["endpoint", "method"],
                              buckets=LATENCY_BUCKETS),
        )
    return _m


def _safe(fn):
    def wrapper(*args, **kwargs):
        try:
            fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - a metric must never break a request
            log.exception("metrics hook %s failed", fn.__name__)
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# ---- counting hooks (one-line calls elsewhere) -------------------------------------------------

@_safe
def login(method: str, result: str) -> None:
    """An authentication: result success (fresh login) or sso (from an existing session)."""
    _metrics().logins.labels(method=method or "unknown", result=result).inc()


@_safe
def wrong_code(method: str, locked: bool = False) -> None:
    """A wrong one-time code; ``locked`` when it ended its challenge."""
    m = _metrics()
    m.wrong.labels(method=method or "unknown").inc()
    m.logins.labels(method=method or "unknown", result="locked" if locked else "wrong_code").inc()
    if locked:
        m.locks.labels(kind="challenge").inc()


@_safe
def code_sent(state: str) -> None:
    """An SMS code handed to the gateway: sent or failed."""
    _metrics().codes.labels(result=state).inc()


@_safe
def lock(kind: str) -> None:
    """A cool-off started (cooloff) or the failure cap reached (failure_cap)."""
    _metrics().locks.labels(kind=kind).inc()


@_safe
def rate_limited(limit: str) -> None:
    """A request refused by a named limit."""
    _metrics().limited.labels(limit=limit).inc()


@_safe
def token_response(status: int, grant: str | None = None) -> None:
    """A token endpoint answer (call inside the request): issued on 200, refused otherwise.
    ``grant``: the request's grant_type, when the caller has read the form itself."""
    grant = ((grant if grant is not None else request.form.get("grant_type")) or "none")[:60]
    if grant == "urn:ietf:params:oauth:grant-type:token-exchange":
        grant = "token_exchange"
    elif grant not in ("authorization_code", "refresh_token", "client_credentials", "none"):
        grant = "other"  # a bounded label set whatever clients send
    m = _metrics()
    (m.tokens if status == 200 else m.token_errors).labels(grant=grant).inc()


@_safe
def token_exchange(from_agency: str, to_agency: str, outcome: str) -> None:
    """A token exchange between agencies: issued, or refused with its error code (registered
    client_ids and RFC error codes only, so the label set stays bounded)."""
    _metrics().exchanges.labels(from_agency=from_agency, to_agency=to_agency, outcome=outcome).inc()


# ---- the app -----------------------------------------------------------------------------------

def prepare_multiprocess(settings) -> str | None:
    """Before ``idp serve`` forks its workers: a fresh directory for their metric files."""
    if not settings.metrics.enabled:
        return None
    path = settings.metrics.multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR") or \
        tempfile.mkdtemp(prefix="idp-metrics-")
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def forget_dead_workers() -> None:
    """At a worker's start: mark the processes whose metric files remain but which are gone
    (killed, or replaced at a restart) as dead, so that no live gauge keeps their last value.
    Their counters and histograms stay in the sums."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    from prometheus_client import multiprocess  # not at import time: see the module docstring

    pids = {name.rsplit("_", 1)[1][:-3] for name in os.listdir(path) if name.endswith(".db")}
    for pid in (int(p) for p in pids if p.isdigit()):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, another user's


#: The latency histogram's child per (endpoint, method): a bounded set (URL rules x methods).
_latency_children: dict[tuple[str, str], Any] = {}


def observe_latency(rule: str, method: str, seconds: float) -> None:
    """One request's latency in ``idp_request_duration_seconds`` (never raises)."""
    try:
        child = _latency_children.get((rule, method))
        if child is None:
            child = _latency_children[(rule, method)] = _metrics().latency.labels(endpoint=rule, method=method)
        child.observe(seconds)
    except Exception:  # noqa: BLE001
        log.exception("latency metric failed")


def init_app(app) -> None:
    """Time every request; serve /metrics when ``[metrics] enabled`` (bearer token required)."""
    settings = app.extensions["idp.settings"]
    if settings.metrics.enabled and not settings.metrics.token:
        raise ConfigError("[metrics] token: required when [metrics] enabled = true (32+ random characters)")

    @app.before_request
    def _start_timer():
        g.metrics_t0 = time.perf_counter()

    @app.after_request
    def _observe(response):
        t0 = g.pop("metrics_t0", None)
        if t0 is not None and request.endpoint != "static":
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            observe_latency(rule, request.method, time.perf_counter() - t0)
        return response

    def metrics_view():
        if not settings.metrics.enabled:
            return Response("Not Found\n", status=404, mimetype="text/plain")
        token = settings.metrics.token
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return Response("Unauthorized\n", status=401, mimetype="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"', "Cache-Control": "no-store"})
        body, content_type = exposition()
        return Response(body, mimetype=None, content_type=content_type, headers={"Cache-Control": "no-store"})

    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])


def gauge(name: str, doc: str, read: Callable[[], float | None]) -> None:
    """Register a gauge read at each scrape: ``read()`` gives its value, or None to leave it out of
    this scrape (what it raises fails the scrape). Registering a name again replaces its reader."""
    _gauges[name] = (doc, read)


def exposition() -> tuple[bytes, str]:
    """The text exposition: every process's counters, and the gauges read now."""
    # not at import time: see the module docstring
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
    from prometheus_client.core import GaugeMetricFamily  # not at import time: see the module docstring

    _metrics()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY

    class Gauges:
        def collect(self):
            for name, (doc, read) in list(_gauges.items()):
                value = read()
                if value is not None:
                    yield GaugeMetricFamily(name, doc, value=value)

    now = CollectorRegistry()
    now.register(Gauges())
    return generate_latest(registry) + generate_latest(now), CONTENT_TYPE_LATEST
