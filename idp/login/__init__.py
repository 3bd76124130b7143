"""The citizen's login: the pages (national ID + mobile, then the one-time code), the codes and
the SMS senders and authenticator apps.

It is what the protocol's paused request waits for: it proves who the person is, starts the
SSO session and hands the request back to the protocol.
May import: idp.platform, idp.citizens, idp.protocol.
"""
