"""The citizen's login: the pages (national ID + mobile, then the one-time code), the codes and
the SMS senders, authenticator apps, and the named rate limits.

It is what the protocol's paused request waits for: it proves who the person is, starts the
SSO session and hands the request back to the protocol.
May import: idp.platform, idp.citizens, idp.protocol.
"""
