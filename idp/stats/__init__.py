"""The national figures (DESIGN §7): unique adults, coverage, daily and monthly unique citizens.

Where each figure comes from:

* **unique adults, ever**: one row of ``stat_counters``, kept in the login's own transaction
  (citizens.record_authentication): exact, constant time.
* **adult population**: ``[stats] adult_population`` when set; otherwise the registry: the
  birth-date snapshot (``stat_birth_dates``, one row per birth date, refreshed once a day by
  ``idp stats rollup``) summed up to today's cut-off, plus the citizens registered since the
  snapshot (``id`` above the snapshot's highest): exact for additions, a few milliseconds at
  any size. With no snapshot yet (before the first rollup), a count of the citizens table.
* **closed days**: ``stat_days`` / ``stat_day_clients``, computed exactly from ``auth_events``
  by ``idp stats rollup`` (idempotent; serialized across nodes by a row lock, so cron may run
  it on every node at once). A closed day that is not rolled up yet is computed from
  ``auth_events`` on the fly, with the same queries.
* **today**: the live counters in the store (HyperLogLog of unique citizens, about 0.8 %
  standard error; exact login counts). When the store lost them (flushed, restarted,
  unreachable) the figures come from ``auth_events`` instead, exactly: the store remembers
  when a day's live counters began, and any auth event of that day from before then means
  they are incomplete.
* **months** (Gregorian and Jalali alike): an open month's unique citizens are kept exact by
  the set ``stat_month_citizens``, to which every rolled-up day adds its citizens (an insert
  that ignores those already there; the number inserted is what the month grows by, so a day
  rolled up twice adds nothing), plus, for days not rolled up yet (today), the citizens of
  their auth events not in the set. When a month is over and all its days are rolled up, the
  month is closed: its count (and its per-agency counts, from ``auth_events``) become final in
  ``stat_months`` / ``stat_month_clients`` and the set is emptied.
* **new adults per day**: citizens whose ``first_adult_authenticated_at`` falls on the day
  (a partial index); per agency, the client of that first adult authentication.

Raw ``auth_events`` are kept until their days are rolled up and their months (in both
calendars) closed; ``idp stats prune --before DATE`` then deletes them in batches.

The modules, each importing only those before it: ``calendars`` (days, months, labels, the
adult cut-off, StatsError), ``models`` (the ``stat_*`` tables), ``figures`` (reading),
``rollups`` (writing: rollup and prune), ``report`` (what ``idp stats`` prints), ``chart``
(``--plot``), ``gauges`` (the live figures /metrics shows).

Owns the ``stat_*`` rollup tables.
May import: idp.platform, idp.citizens, idp.protocol.
"""
