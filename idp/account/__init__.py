"""The citizen's own pages: the authenticator app and the services they allowed.

May import: idp.platform, idp.citizens, idp.protocol, idp.login.
"""
