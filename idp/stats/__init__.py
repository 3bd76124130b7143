"""The national figures: calendars, daily and monthly rollups, unique adults and coverage, the
report and its chart.

Owns the ``stat_*`` rollup tables.
May import: idp.platform, idp.citizens, idp.protocol.
"""
