"""The citizen's own pages: the authenticator app, the services they allowed, and their record.

May import: idp.platform, idp.citizens, idp.protocol, idp.login.
"""
