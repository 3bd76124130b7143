"""The OAuth 2.0 / OpenID Connect provider: the Authlib server and its grants, agency clients,
subjects and claims, the authorization pipeline and the paused request it keeps while a person
logs in, SSO sessions, the token, userinfo, revocation and introspection endpoints, consent,
logout and the back-channel queue, private_key_jwt, and token exchange between agencies with
the operators' delegations.

Owns the tables ``clients``, ``refresh_tokens``, ``consents``, ``logout_deliveries``,
``delegations`` and ``exchange_days``.
May import: idp.platform, idp.citizens.
"""
