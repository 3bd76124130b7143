"""The exact unique-adult counter (DESIGN §7): right under concurrent first logins from
several processes, and a minor counted at their first login as an adult."""
from __future__ import annotations

import datetime as dt
import multiprocessing as mp

from sqlalchemy import func, select

from idp.citizens.models import AuthEvent, CitizenRow

PROCESSES = 6
LOGINS_EACH = 3


def _login_many(settings_values: dict, national_id: str, barrier, results) -> None:
    """In a separate process: a new app, then several authentications of the same citizen at once."""
    from idp import create_app
    from idp.citizens.counting import record_authentication
    from idp.citizens.directory import find
    from idp.platform.settings import load_settings

    app = create_app(load_settings(None, env={}, overrides=settings_values))
    with app.app_context():
        citizen = find(national_id).citizen
        barrier.wait(timeout=30)
        new = 0
        for _ in range(LOGINS_EACH):
            new += record_authentication(citizen, "concurrency-test", "sms")
        results.put(new)


def test_concurrent_first_logins_count_once(provider):
    from idp.citizens.counting import unique_adults

    national_id, _ = provider.add_citizen(birth_date="1970-05-05")
    with provider.app.app_context():
        before = unique_adults()
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    values = provider.settings.as_dict(reveal_secrets=True)
    procs = [ctx.Process(target=_login_many, args=(values, national_id, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    new_adults = sum(results.get(timeout=5) for _ in procs)
    assert new_adults == 1, "exactly one of the concurrent logins may see a new adult"
    with provider.app.app_context():
        from idp.platform.database import db

        assert unique_adults() == before + 1
        citizen = db.session.execute(select(CitizenRow).filter_by(national_id=national_id)).scalar_one()
        assert citizen.first_adult_authenticated_at is not None
        events = db.session.execute(select(func.count()).select_from(AuthEvent)
                                    .where(AuthEvent.citizen_id == citizen.id)).scalar_one()
        assert events == PROCESSES * LOGINS_EACH


def test_minor_is_counted_at_first_login_as_an_adult(provider):
    from idp.citizens.counting import record_authentication, unique_adults
    from idp.citizens.directory import find
    from idp.citizens.models import CitizenRow
    from idp.platform.database import db

    eighteenth = dt.date(2008, 6, 15).replace(year=2026)
    national_id, _ = provider.add_citizen(birth_date="2008-06-15")
    with provider.app.app_context():
        citizen = find(national_id).citizen
        before = unique_adults()
        as_minor = dt.datetime(2026, 6, 14, 12, 0, tzinfo=dt.timezone.utc)
        assert record_authentication(citizen, "t", "sms", at=as_minor) is False
        assert unique_adults() == before
        citizen = find(national_id).citizen
        row = db.session.execute(db.select(CitizenRow).filter_by(national_id=national_id)).scalar_one()
        assert row.first_authenticated_at is not None and row.first_adult_authenticated_at is None
        assert not citizen.adult_counted
        # 18th birthday begins at local midnight in Tehran (UTC+03:30): 20:30 UTC the day before.
        birthday_tehran = dt.datetime(2026, 6, 14, 21, 0, tzinfo=dt.timezone.utc)
        assert birthday_tehran.astimezone(dt.timezone(dt.timedelta(hours=3, minutes=30))).date() == eighteenth
        assert record_authentication(citizen, "t", "sms", at=birthday_tehran) is True
        assert unique_adults() == before + 1
        assert record_authentication(find(national_id).citizen, "t", "sms") is False
        assert unique_adults() == before + 1


def test_stats_command_reports_the_total(provider, tmp_path):
    import json

    from .helpers import idp

    out = idp(provider, "stats", "--json", timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    with provider.app.app_context():
        from idp.citizens.counting import unique_adults

        assert data["unique_adults"] == unique_adults()
    assert data["adult_population"] > 0 and 0 <= data["coverage_percent"] <= 100
