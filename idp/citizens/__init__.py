"""Citizens: national-ID rules, the registry and its import, finding a citizen, and counting
each authentication (the unique-adult counter).

Owns the tables ``citizens``, ``auth_events`` and ``stat_counters``.
May import: idp.platform.
"""
