"""What the provider supports, and the documents that say so: OpenID Provider Metadata (OIDC
Discovery 1.0) and the public signing keys (RFC 7517).

The constants here (scopes, client authentication methods, acr/amr values) are the one list
the grants, the endpoints and the metadata all read.
"""
from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app

from ..platform import metrics
from ..platform.hosts import accepted_hosts, environ_host_name
from ..platform.keyring import keyring
from ..platform.keys import JWKS_CACHE_SECONDS
from ..platform.settings import settings

bp = Blueprint("discovery", __name__)

#: acr values (OIDC Core §2) and amr values (RFC 8176) per factor the citizen proved.
ACR = {"sms": "urn:idp:acr:sms", "totp": "urn:idp:acr:totp"}
AMR = {"sms": ["sms"], "totp": ["otp"]}
SCOPES = ["openid", "profile", "phone", "national_id", "age", "offline_access"]
AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none", "private_key_jwt"]
#: RFC 8693 token exchange between agencies (oauth.TokenExchangeGrant, protocol.delegations).
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
#: Introspection tells an API about a citizen's token: only a client that proves who it is may
#: ask (RFC 7662 §2.1, §4), never a public client naming itself by its client_id alone.
INTROSPECTION_AUTH_METHODS = [m for m in AUTH_METHODS if m != "none"]


def endpoint(path: str) -> str:
    """The absolute URL of one of our endpoints (from [server] issuer, never from the request)."""
    return settings.server.issuer + path


def discovery_document() -> dict[str, Any]:
    """OpenID Provider Metadata (OIDC Discovery §3): exactly what is implemented."""
    iss = settings.server.issuer
    return {
        "issuer": iss,
        "authorization_endpoint": f"{iss}/authorize",
        "token_endpoint": f"{iss}/token",
        "userinfo_endpoint": f"{iss}/userinfo",
        "jwks_uri": f"{iss}/jwks",
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", TOKEN_EXCHANGE],
        "revocation_endpoint": f"{iss}/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint": f"{iss}/introspect",
        "introspection_endpoint_auth_methods_supported": INTROSPECTION_AUTH_METHODS,
        "subject_types_supported": ["pairwise", "public"],
        "id_token_signing_alg_values_supported": [settings.keys.id_token_alg],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        # private_key_jwt assertions (RFC 8414 §2): RS256 or ES256, never none or HMAC.
        "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "revocation_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "introspection_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "azp", "sid",
                             "name", "given_name", "family_name", "birthdate", "locale",
                             "phone_number", "phone_number_verified", "national_id", "age_over_18"],
        "acr_values_supported": list(ACR.values()),
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "ui_locales_supported": ["fa-IR", "en"],
        "end_session_endpoint": f"{iss}/logout",
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
    }


def discovery_json(app: Flask) -> bytes:
    """The document, serialized once (it depends on the settings alone)."""
    body = app.extensions.get("idp.discovery_json")
    if body is None:
        with app.app_context():
            body = app.extensions["idp.discovery_json"] = json.dumps(discovery_document()).encode()
    return body


@bp.get("/.well-known/openid-configuration")
def discovery():
    """OpenID Provider Metadata (OIDC Discovery 1.0 §4)."""
    resp = Response(discovery_json(current_app._get_current_object()), mimetype="application/json")
    resp.headers["Cache-Control"] = "public, max-age=300"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


@bp.get("/jwks")
def jwks():
    """The public signing keys (RFC 7517). Cached briefly so rotations reach clients quickly."""
    resp = Response(keyring.jwks_json(), mimetype="application/jwk-set+json")
    # Rotation publishes a key at least twice this long before it signs (keys.py).
    resp.headers["Cache-Control"] = f"public, max-age={JWKS_CACHE_SECONDS}"
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


class PublishedDocuments:
    """WSGI middleware: a plain ``GET`` of the two published documents is answered here, before
    Flask builds a request, with the very bytes and headers of the views above.

    Every client and API fetches these documents, and they are the same for everyone: the
    request context, the session, CSRF, the language and the URL map would only cost time.
    Served here only when nothing else about the request matters: GET, no query string, a host
    this provider answers for. Anything else (HEAD, OPTIONS, ``?lang=``, a foreign host, ...)
    goes on to Flask, which answers (or refuses) as it does for every path. Sits inside ProxyFix,
    so the host is the one the proxy forwarded, and inside web.SecurityHeaders, which adds the
    security headers here as on every answer."""

    #: path -> (Content-Type, Cache-Control), as the views above answer
    PATHS = {"/.well-known/openid-configuration": ("application/json", "public, max-age=300"),
             "/jwks": ("application/jwk-set+json", f"public, max-age={JWKS_CACHE_SECONDS}")}

    def __init__(self, wsgi_app, app: Flask):
        self.wsgi_app, self.app = wsgi_app, app
        self.hosts = accepted_hosts(app.extensions["idp.settings"])

    def body(self, path: str) -> bytes:
        if path == "/jwks":
            return self.app.extensions["idp.keyring"].jwks_json()
        return discovery_json(self.app)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO")
        if (path not in self.PATHS or environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING")
                or environ_host_name(environ) not in self.hosts):
            return self.wsgi_app(environ, start_response)
        t0 = time.perf_counter()
        body = self.body(path)
        content_type, cache = self.PATHS[path]
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  ("Cache-Control", cache), ("Access-Control-Allow-Origin", "*")])
        metrics.observe_latency(path, "GET", time.perf_counter() - t0)
        return [body]
