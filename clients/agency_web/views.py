"""The agency's pages: home, login, callback (the end of the OIDC flow) and logout."""

from __future__ import annotations

import logging
from typing import Any

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError
from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from joserfc.errors import JoseError

bp = Blueprint("agency", __name__)
log = logging.getLogger(__name__)

#: Claims shown on the home page, in this order, from each source.
SHOWN_CLAIMS = ("sub", "given_name", "family_name", "birthdate", "acr", "amr", "auth_time")
#: ID tokens are accepted only with these asymmetric algorithms.
ID_TOKEN_ALGORITHMS = {"RS256", "ES256"}

#: What the citizen is told for each failure, Persian first.
MESSAGES = {
    "access_denied": ("ورود لغو شد یا اجازه‌ی دسترسی داده نشد.",
                      "The login was cancelled, or access was not allowed."),
    "provider_unavailable": ("درگاه ملی در دسترس نیست. لطفاً کمی بعد دوباره تلاش کنید.",
                             "The national identity provider cannot be reached. Please try again shortly."),
    "state_mismatch": ("این درخواست ورود منقضی شده یا پیش‌تر استفاده شده است. دوباره وارد شوید.",
                       "This login attempt has expired or was already used. Please log in again."),
    "issuer_mismatch": ("پاسخ از درگاهی ناشناخته رسید و پذیرفته نشد.",
                        "The response came from an unexpected identity provider and was refused."),
    "invalid_response": ("پاسخ درگاه ملی قابل تأیید نبود.",
                         "The identity provider's response could not be verified."),
    "sign_in_failed": ("ورود کامل نشد. لطفاً دوباره تلاش کنید.",
                       "The sign-in could not be completed. Please try again."),
}


class ProviderUnavailable(Exception):
    """Discovery could not be loaded, or it names another issuer."""


def settings():
    """This agency's Settings."""
    return current_app.extensions["agency_settings"]


def provider():
    """The Authlib client registered for the national provider."""
    return current_app.extensions["agency_provider"]


def provider_metadata() -> dict[str, Any]:
    """The provider's discovery document, which must name our issuer (OIDC Discovery §4.3)."""
    try:
        metadata = provider().load_server_metadata()
    except (requests.RequestException, ValueError) as error:
        raise ProviderUnavailable(str(error)) from error
    if metadata.get("issuer") != settings().issuer:
        raise ProviderUnavailable("discovery names another issuer")
    # Authlib verifies the ID token with the algorithms the metadata lists;
    # pin them to ours so a listed "none" or HS256 is never accepted.
    offered = metadata.get("id_token_signing_alg_values_supported") or ["RS256"]
    pinned = [alg for alg in offered if alg in ID_TOKEN_ALGORITHMS]
    if not pinned:
        raise ProviderUnavailable("no acceptable ID token signing algorithm")
    metadata["id_token_signing_alg_values_supported"] = pinned
    return metadata


def error_page(code: str, status: int = 400):
    """A bilingual page explaining why the login failed, never a stack trace.

    Only the codes of MESSAGES reach the page: what the provider or Authlib said (an OAuth
    ``error_description``, "invalid_client ... methods: [...]") is for the log, not for the
    citizen, who can do nothing with it, and text from a redirect is anyone's to write.
    """
    if code not in MESSAGES:
        code = "sign_in_failed"
    message_fa, message_en = MESSAGES[code]
    return render_template("error.html", agency=settings().agency, code=code,
                           message_fa=message_fa, message_en=message_en), status


@bp.errorhandler(ProviderUnavailable)
def provider_unavailable(error: ProviderUnavailable):
    """Any page that needs the provider while it is unreachable."""
    log.warning("identity provider unavailable: %s", error)
    return error_page("provider_unavailable", status=502)


@bp.get("/")
def home():
    """The landing page: a login button, or the verified claims and the agency's record."""
    id_claims = session.get("id_claims")
    agency = settings().agency
    return render_template(
        "home.html",
        agency=agency,
        id_claims=id_claims,
        userinfo=session.get("userinfo") or {},
        record=agency.record(id_claims["sub"]) if id_claims else None,
        shown_claims=SHOWN_CLAIMS,
    )


@bp.get("/login")
def login():
    """Start the authorization code flow; Authlib adds state, nonce and the S256 PKCE challenge."""
    provider_metadata()
    forget_pending_logins()
    return provider().authorize_redirect(settings().redirect_uri)


@bp.get("/callback")
def callback():
    """Finish the login: issuer, error, state, code exchange, ID token, then userinfo."""
    metadata = provider_metadata()
    # RFC 9207 §2.4: a response naming another issuer is a mix-up attack;
    # and a provider that advertises the parameter must always send it.
    iss = request.args.get("iss")
    if (iss is not None and iss != settings().issuer) or (
        iss is None and metadata.get("authorization_response_iss_parameter_supported")
    ):
        return error_page("issuer_mismatch")
    if "error" in request.args:
        if "state" in request.args:
            provider().framework.clear_state_data(session, request.args["state"])
        error = request.args["error"]
        # A citizen who cancels is routine; any other error is worth a look by the agency.
        log.log(logging.INFO if error == "access_denied" else logging.WARNING, "the provider answered %r: %r",
                error, request.args.get("error_description"))
        return error_page("access_denied" if error == "access_denied" else "sign_in_failed")
    try:
        token = provider().authorize_access_token()
        id_claims = verified_id_claims(token)
        userinfo = dict(provider().userinfo(token=token))
    except MismatchingStateError:
        return error_page("state_mismatch")
    except requests.HTTPError as error:
        log.warning("provider answered with an error: %s", error)
        return error_page("invalid_response")
    except requests.RequestException as error:
        raise ProviderUnavailable(str(error)) from error
    except (AuthlibBaseError, JoseError, ValueError, KeyError) as error:
        # A refused code exchange (a wrong client secret: invalid_client) lands here too.
        log.warning("login response refused: %s: %s", type(error).__name__, error)
        return error_page("sign_in_failed")
    # OIDC Core §5.3.2: userinfo about someone else must not be used.
    if userinfo.get("sub") != id_claims["sub"]:
        log.warning("login response refused: the userinfo sub differs from the ID token's")
        return error_page("invalid_response")
    session.clear()
    session.update(id_token=token["id_token"], id_claims=id_claims, userinfo=userinfo)
    return redirect(url_for(".home"))


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """Forget the local session, then end the provider's session if it offers RP-Initiated Logout."""
    id_token = session.get("id_token")
    session.clear()
    home = settings().base_url + "/"
    try:
        end_session = provider_metadata().get("end_session_endpoint")
    except ProviderUnavailable:
        end_session = None
    if not (end_session and id_token):
        return redirect(url_for(".home"))
    logout_url = provider().create_logout_url(
        post_logout_redirect_uri=home, id_token_hint=id_token, client_id=settings().client_id
    )["url"]
    return redirect(logout_url)


def verified_id_claims(token: dict[str, Any]) -> dict[str, Any]:
    """The ID token claims Authlib verified (signature, iss, aud, exp, nonce), as a plain dict.

    Authlib silently skips verification when the token response has no ID
    token, so its absence is an error here.
    """
    if "id_token" not in token or not token.get("userinfo"):
        raise ValueError("the token response has no ID token")
    return dict(token["userinfo"])


def forget_pending_logins() -> None:
    """Drop earlier unfinished logins so repeated clicks cannot grow the cookie without bound.

    Authlib keeps each pending login (state, nonce, PKCE verifier) in the
    session under a ``_state_<name>_`` key and only prunes expired ones.
    """
    for key in [key for key in session if key.startswith("_state_idp_")]:
        session.pop(key)
