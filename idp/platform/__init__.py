"""The platform every other package stands on: settings, the database, the store and its key
schema, signing keys, audit events, metrics, errors, page text, and the web guards.

May import: nothing of idp outside this package.
"""
