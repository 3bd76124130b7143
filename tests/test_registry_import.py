"""`idp citizens import`: every row validated, bad rows reported by line, one transaction, re-import
updates the registry facts and never the subject_key. On SQLite and PostgreSQL."""
from __future__ import annotations

import csv
import datetime as dt
import json
import random
import secrets

import pytest

from idp.citizens.national_id import InvalidMobile, InvalidNationalId, make_national_id, parse_mobile, parse_national_id

from .helpers import run_idp
from .test_cli import env  # noqa: F401 - the operator's environment fixture

HEADER = "national_id,mobile,birth_date,given_name,family_name,given_name_latin,family_name_latin\n"


def new_id() -> str:
    while True:
        value = make_national_id(f"{secrets.randbelow(10**9):09d}")
        if len(set(value)) > 1:
            return value


def bad_check_digit(national_id: str) -> str:
    return national_id[:9] + str((int(national_id[9]) + 1) % 10)


def to_persian(digits: str) -> str:
    return digits.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))


def do_import(provider, path, report=None):
    from idp.citizens.importer import import_file

    with provider.app.app_context():
        return import_file(path, report)


def citizen(provider, national_id):
    from idp.citizens.models import CitizenRow
    from idp.platform.database import db

    with provider.app.app_context():
        row = db.session.execute(db.select(CitizenRow).filter_by(national_id=national_id)).scalar_one_or_none()
        if row is not None:
            db.session.expunge(row)
        return row


def count(provider) -> int:
    from idp.citizens.models import CitizenRow
    from idp.platform.database import db

    with provider.app.app_context():
        return db.session.execute(db.select(db.func.count()).select_from(CitizenRow)).scalar_one()


def test_jalali_birth_dates_are_read_as_idp_stats_reads_dates(provider, tmp_path):
    """A year before 1700 is Jalali (idp.platform.dates, the rule of `idp stats`): the registry
    stores the Gregorian date; a day that is not in the Jalali calendar, or a Jalali date before
    1900, is a rejected row saying how it was read. CSV and JSON lines alike."""
    a, b, c, d, e, f_ = (new_id() for _ in range(6))
    f = tmp_path / "jalali.csv"
    f.write_text(HEADER + f"{a},09121234567,1370-01-01,,,,\n"
                 f"{b},09121234567,{to_persian('1395/12/30')},,,,\n"   # a Jalali leap day, Persian digits
                 f"{c},09121234567,1985/02/03,,,,\n"                   # Gregorian with slashes
                 f"{d},09121234567,1370-12-31,,,,\n"                   # 1370 is not a leap year
                 f"{e},09121234567,1250-01-01,,,,\n", encoding="utf-8")  # Jalali, but 1871
    r = do_import(provider, f)
    assert [(x["line"], x["reason"]) for x in r.rejections] == [
        (5, "birth_date: not a Jalali calendar date (a year before 1700 is Jalali)"),
        (6, "birth_date: before 1900 (1250-01-01 is Jalali: 1871-03-21)")]
    assert r.loaded == 3
    assert [citizen(provider, n).birth_date for n in (a, b, c)] == \
        [dt.date(1991, 3, 21), dt.date(2017, 3, 20), dt.date(1985, 2, 3)]
    g = tmp_path / "jalali.jsonl"
    g.write_text(json.dumps({"national_id": f_, "mobile": "09121234567", "birth_date": "1402-07-15"}) + "\n",
                 encoding="utf-8")
    assert do_import(provider, g).loaded == 1 and citizen(provider, f_).birth_date == dt.date(2023, 10, 7)


def test_valid_rows_are_loaded(provider, tmp_path):
    a, b, c = new_id(), new_id(), new_id()
    f = tmp_path / "ok.csv"
    f.write_text(HEADER + f"{a},09121234567,1985-02-03,علی,رضایی,Ali,Re\\zaei\n"
                 f"{to_persian(b)},+98 935 111 2233,{to_persian('1983-03-21')},,,,\n"
                 # columns may come in any order; optional ones may be absent
                 , encoding="utf-8")
    g = tmp_path / "reordered.csv"
    g.write_text(f"Birth_Date , mobile,national_id\n2001-12-31,9127654321,{c}\n", encoding="utf-8")
    r = do_import(provider, f)
    assert (r.rows, r.loaded, r.inserted, r.updated, r.rejected) == (2, 2, 2, 0, 0), r.rejections
    assert r.report_path is None and not (tmp_path / "ok.csv.rejected.csv").exists()
    r = do_import(provider, g)
    assert (r.loaded, r.inserted, r.rejected) == (1, 1, 0), r.rejections

    row = citizen(provider, a)
    assert (row.mobile, row.birth_date, row.given_name, row.family_name, row.given_name_latin,
            row.family_name_latin) == ("+989121234567", dt.date(1985, 2, 3), "علی", "رضایی", "Ali", "Re\\zaei")
    assert len(row.subject_key) == 43 and row.created_at.tzinfo is not None
    row = citizen(provider, b)
    assert (row.mobile, row.birth_date, row.given_name) == ("+989351112233", dt.date(1983, 3, 21), None)
    assert citizen(provider, c).mobile == "+989127654321"


def test_each_bad_row_is_rejected_with_its_line_and_reason(provider, tmp_path):
    good, dup, later = new_id(), new_id(), new_id()
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    rows = [
        f"{good},09121234567,1985-02-03,سارا,,,",                         # 2
        f"{bad_check_digit(new_id())},09121234567,1985-02-03,,,,",        # 3
        f"{new_id()},0812345678,1985-02-03,,,,",                          # 4
        f"{new_id()},09121234567,1985-02-30,,,,",                         # 5
        f"{new_id()},09121234567,03/02/1985,,,,",                         # 6
        f"{new_id()},09121234567,{tomorrow},,,,",                         # 7
        f"{new_id()},09121234567,1899-12-31,,,,",                         # 8
        f"{new_id()},09121234567,1985-02-03,{'ن' * 101},,,",               # 9
        f"{dup},09121234567,1985-02-03,,,,",                              # 10
        f"{dup},09129999999,1990-01-01,,,,",                              # 11
        ",09121234567,1985-02-03,,,,",                                   # 12
        f"{new_id()},09121234567,1985-02-03,a,b,c,d,extra",               # 13
        f'{new_id()},09121234567,1985-02-03,"two\nlines",,,',             # 14-15
        f"{later},09121234567,1985-02-03,,,,",                            # 16
        "1111111111,09121234567,1985-02-03,,,,",                          # 17
    ]
    f = tmp_path / "mixed.csv"
    f.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    before = count(provider)
    r = do_import(provider, f)
    expected = [
        (3, "national_id: the check digit does not match"),
        (4, "mobile: not a mobile number in an accepted form"),
        (5, "birth_date: not a calendar date"),
        (6, "birth_date: must be YYYY-MM-DD"),
        (7, "birth_date: in the future"),
        (8, "birth_date: before 1900"),
        (9, "given_name: longer than 100 characters"),
        (11, "national_id: duplicate of an earlier row in this file"),
        (12, "national_id: missing"),
        (13, "8 fields, the header has 7"),
        (14, "given_name: contains control characters"),
        (17, "national_id: not an issued national ID"),
    ]
    assert [(x["line"], x["reason"]) for x in r.rejections] == expected
    assert (r.rows, r.loaded, r.inserted, r.rejected) == (15, 3, 3, 12)
    assert count(provider) == before + 3
    assert citizen(provider, dup).mobile == "+989121234567"  # the first row of a duplicate wins
    assert citizen(provider, later) is not None

    # The default report sits next to the input.
    report = tmp_path / "mixed.csv.rejected.csv"
    assert r.report_path == str(report)
    with open(report, encoding="utf-8", newline="") as fh:
        assert list(csv.reader(fh)) == [["line", "reason"]] + [[str(n), why] for n, why in expected]


def test_reimport_updates_the_mobile_and_keeps_the_subject_key(provider, tmp_path):
    from idp.protocol.subjects import subject_for

    nid, other = new_id(), new_id()
    f = tmp_path / "first.csv"
    f.write_text(HEADER + f"{nid},09121111111,1980-05-05,مریم,کریمی,,\n{other},09122222222,1970-01-01,,,,\n",
                 encoding="utf-8")
    assert do_import(provider, f).inserted == 2
    before = citizen(provider, nid)
    client_id, _, _ = provider.add_client()  # pairwise subs by default

    g = tmp_path / "second.csv"
    g.write_text(HEADER + f"{nid},09123333333,1980-05-06,مریم,کریمی‌نژاد,Maryam,\n"
                 f"{other},09122222222,1970-01-01,,,,\n", encoding="utf-8")
    r = do_import(provider, g)
    assert (r.loaded, r.inserted, r.updated, r.unchanged, r.rejected) == (2, 0, 1, 1, 0)
    after = citizen(provider, nid)
    assert after.id == before.id and after.subject_key == before.subject_key
    assert (after.mobile, after.birth_date, after.family_name, after.given_name_latin) == \
        ("+989123333333", dt.date(1980, 5, 6), "کریمی‌نژاد", "Maryam")
    assert after.created_at == before.created_at and after.updated_at > before.updated_at
    from idp.platform.database import db
    from idp.protocol.models import Client

    with provider.app.app_context():
        client = db.session.execute(db.select(Client).filter_by(client_id=client_id)).scalar_one()
        assert subject_for(after, client) == subject_for(before, client)

    # The same file again changes nothing, not even updated_at.
    r = do_import(provider, g)
    assert (r.inserted, r.updated, r.unchanged) == (0, 0, 2)
    assert citizen(provider, nid).updated_at == after.updated_at


def test_json_lines_import_and_json_report(provider, tmp_path):
    a, b, c = new_id(), new_id(), new_id()
    lines = [
        json.dumps({"national_id": a, "mobile": "09121234567", "birth_date": "1990-01-01", "given_name": "سارا",
                    "family_name": None}, ensure_ascii=False),
        "",
        '{"national_id": "' + b + '", "mobile": ',
        "[1, 2]",
        json.dumps({"national_id": int(c), "mobile": "09121234567", "birth_date": "1990-01-01"}),
        json.dumps({"national_id": c, "mobile": "09121234567", "birth_date": 19900101}),
        json.dumps({"national_id": c, "mobile": "09121234567", "birth_date": "1990-01-01", "given_name": "a\u2028b"}),
        # a key we do not know (a misspelt one) is not ignored: its row is rejected
        json.dumps({"national_id": b, "mobile": "09121234567", "birth_date": "1990-01-01", "Mobile": "0912"}),
    ]
    f = tmp_path / "people.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = tmp_path / "out" / "rejects.jsonl"
    report.parent.mkdir()
    r = do_import(provider, f, report)
    assert [(x["line"], x["reason"]) for x in r.rejections] == [
        (3, "not valid JSON"), (4, "not a JSON object"), (5, "national_id: must be text"),
        (6, "birth_date: must be YYYY-MM-DD"), (8, 'unknown keys: "Mobile"')]
    assert (r.rows, r.loaded, r.rejected) == (7, 2, 5)
    assert citizen(provider, b) is None
    assert citizen(provider, c).given_name == "a\u2028b"  # U+2028 is not a line break in JSON lines
    assert [json.loads(x) for x in report.read_text(encoding="utf-8").splitlines()] == r.rejections

    # Sniffed: JSON lines in a file without the extension.
    d = new_id()
    g = tmp_path / "export.txt"
    g.write_text("\ufeff" + json.dumps({"national_id": d, "mobile": "9121234567", "birth_date": "2000-02-29"}),
                 encoding="utf-8")
    r = do_import(provider, g)
    assert (r.loaded, r.rejected) == (1, 0) and citizen(provider, d).birth_date == dt.date(2000, 2, 29)


NAMES = ("مریم", "کریمی", "Maryam", "Karimi")


def registered(provider, tmp_path, *national_ids: str) -> None:
    """Citizens with every column set (mobile 09121111111, born 1980-05-05, NAMES)."""
    f = tmp_path / "full.csv"
    f.write_text(HEADER + "".join(f"{nid},09121111111,1980-05-05,{','.join(NAMES)}\n" for nid in national_ids),
                 encoding="utf-8")
    assert do_import(provider, f).inserted == len(national_ids)


def facts(provider, national_id) -> tuple:
    row = citizen(provider, national_id)
    return (row.mobile, row.birth_date.isoformat(), row.given_name, row.family_name, row.given_name_latin,
            row.family_name_latin)


def audit_events(provider) -> list[dict]:
    from idp.platform.audit import latest

    with provider.app.app_context():
        return latest(10_000, "registry_imported")


def test_absent_csv_columns_are_never_written(provider, tmp_path):
    """A file with fewer columns changes only those: it once replaced the citizen whole."""
    nid, fresh, unknown = new_id(), new_id(), new_id()
    registered(provider, tmp_path, nid)
    before = citizen(provider, nid)

    f = tmp_path / "some.csv"
    f.write_text(f"national_id,mobile,birth_date,given_name\n{nid},09122222222,1980-05-05,زهرا\n"
                 f"{fresh},09123333333,1990-01-01,سارا\n", encoding="utf-8")
    r = do_import(provider, f)
    assert facts(provider, nid) == ("+989122222222", "1980-05-05", "زهرا", *NAMES[1:])
    assert facts(provider, fresh) == ("+989123333333", "1990-01-01", "سارا", None, None, None)
    assert (r.inserted, r.updated, r.unchanged, r.rejected) == (1, 1, 0, 0)
    assert r.columns == ["national_id", "mobile", "birth_date", "given_name"]

    # Only national_id and mobile: a known citizen's mobile moves, nothing else; a new one cannot
    # be made from it, and says why.
    g = tmp_path / "mobiles.csv"
    g.write_text(f"mobile,national_id\n09124444444,{nid}\n09125555555,{unknown}\n09123333333,{fresh}\n",
                 encoding="utf-8")
    r = do_import(provider, g)
    assert (r.rows, r.inserted, r.updated, r.unchanged, r.rejected) == (3, 0, 1, 1, 1)
    assert [(x["line"], x["reason"]) for x in r.rejections] == [
        (3, "national_id: not registered, and a new citizen needs birth_date")]
    assert facts(provider, nid) == ("+989124444444", "1980-05-05", "زهرا", *NAMES[1:])
    assert citizen(provider, unknown) is None
    after = citizen(provider, nid)
    assert after.subject_key == before.subject_key and after.updated_at > before.updated_at


def test_absent_json_keys_are_never_written_per_row(provider, tmp_path):
    """In JSON lines each row writes the keys it holds; null or "" clears a name only."""
    a, b, c, fresh, short, bare = (new_id() for _ in range(6))
    registered(provider, tmp_path, a, b, c)
    lines = [
        {"national_id": a, "mobile": "09122222222"},                                      # 1
        {"national_id": b, "family_name": "نو", "given_name_latin": None, "given_name": ""},  # 2
        {"national_id": fresh, "mobile": "09123333333", "birth_date": "2001-02-03"},      # 3
        {"national_id": short, "mobile": "09123333333"},                                  # 4
        {"national_id": bare},                                                            # 5
        {"national_id": c, "mobile": "", "family_name": "دیگر"},                           # 6
    ]
    f = tmp_path / "changes.jsonl"
    f.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n{broken\n", encoding="utf-8")
    r = do_import(provider, f, tmp_path / "rejected.csv")
    assert facts(provider, a) == ("+989122222222", "1980-05-05", *NAMES)
    assert facts(provider, b) == ("+989121111111", "1980-05-05", None, "نو", None, NAMES[3])
    assert facts(provider, c) == ("+989121111111", "1980-05-05", *NAMES)  # its row was rejected whole
    assert facts(provider, fresh) == ("+989123333333", "2001-02-03", None, None, None, None)
    assert citizen(provider, short) is None and citizen(provider, bare) is None
    assert (r.rows, r.inserted, r.updated, r.unchanged, r.rejected) == (7, 1, 2, 0, 4)
    # Rows rejected while reading (6, 7) and new citizens found lacking a column (4, 5): one
    # report, in line order.
    expected = [(4, "national_id: not registered, and a new citizen needs birth_date"),
                (5, "national_id: not registered, and a new citizen needs mobile and birth_date"),
                (6, "mobile: missing"), (7, "not valid JSON")]
    assert [(x["line"], x["reason"]) for x in r.rejections] == expected
    with open(tmp_path / "rejected.csv", encoding="utf-8", newline="") as fh:
        assert list(csv.reader(fh))[1:] == [[str(n), why] for n, why in expected]
    assert r.columns == ["national_id", "mobile", "birth_date", "given_name", "family_name", "given_name_latin"]


def test_empty_values_in_present_csv_columns(provider, tmp_path):
    """An empty name clears it; an empty mobile or birth date rejects the row (never a NULL); a
    row with too few fields is rejected rather than read as empty values."""
    a, b, c = new_id(), new_id(), new_id()
    registered(provider, tmp_path, a, b, c)
    f = tmp_path / "blanks.csv"
    f.write_text("national_id,mobile,birth_date,given_name_latin,family_name_latin\n"
                 f"{a},09121111111,1980-05-05,,Karimi\n"
                 f"{b},,1980-05-05,Maryam,Karimi\n"
                 f"{c},09121111111,,,\n"
                 f"{c},09121111111\n", encoding="utf-8")
    r = do_import(provider, f)
    assert [(x["line"], x["reason"]) for x in r.rejections] == [
        (3, "mobile: missing"), (4, "birth_date: missing"), (5, "2 fields, the header has 5")]
    assert (r.updated, r.rejected) == (1, 3)
    assert facts(provider, a) == ("+989121111111", "1980-05-05", NAMES[0], NAMES[1], None, "Karimi")
    assert facts(provider, b) == facts(provider, c) == ("+989121111111", "1980-05-05", *NAMES)


def test_unknown_csv_columns_refuse_the_file(provider, tmp_path):
    """A misspelt column is not ignored: the file is refused, nothing written, nothing audited."""
    from idp.citizens.records import InvalidCitizen

    nid = new_id()
    registered(provider, tmp_path, nid)
    events = len(audit_events(provider))
    for header, unknown in [("national_id,mobile,birth_date,family_nmae", '"family_nmae"'),
                            ("national_id,mobile,birth_date,", '""')]:
        f = tmp_path / "typo.csv"
        f.write_text(f"{header}\n{nid},09129999999,1980-05-05,X\n", encoding="utf-8")
        with pytest.raises(InvalidCitizen, match=f"typo.csv: the CSV header has unknown columns {unknown} "
                                                 r"\(known: national_id, mobile, birth_date, given_name, "):
            do_import(provider, f)
    assert facts(provider, nid) == ("+989121111111", "1980-05-05", *NAMES)
    assert len(audit_events(provider)) == events


def test_each_import_is_one_audit_event(provider, tmp_path):
    """Counts, the file's SHA-256 and columns, and who ran it, committed with the import."""
    import hashlib
    import os
    import pwd
    import socket

    from idp.citizens.records import InvalidCitizen

    known, same, fresh = new_id(), new_id(), new_id()
    registered(provider, tmp_path, known, same)
    events = audit_events(provider)
    f = tmp_path / "audited.csv"
    f.write_text(f"national_id,mobile,birth_date\n{known},09122222222,1980-05-05\n{same},09121111111,1980-05-05\n"
                 f"{fresh},09123333333,1999-09-09\n{bad_check_digit(fresh)},09123333333,1999-09-09\n",
                 encoding="utf-8")
    r = do_import(provider, f)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    new = audit_events(provider)[len(events):]
    assert [e["event"] for e in new] == ["registry_imported"]
    assert new[0]["details"] == {
        "file": str(f), "bytes": f.stat().st_size, "sha256": digest, "columns": ["national_id", "mobile", "birth_date"],
        "rows": 4, "inserted": 1, "updated": 1, "unchanged": 1, "rejected": 1,
        "os_user": pwd.getpwuid(os.geteuid()).pw_name, "host": socket.gethostname()}
    assert new[0]["subject_fp"] is None and known not in json.dumps(new[0])
    assert r.sha256 == digest

    # The hash is of the bytes as they are on disk, a byte-order mark and the format sniffing included.
    g = tmp_path / "export.txt"
    g.write_bytes("\ufeff".encode() + json.dumps({"national_id": fresh, "given_name": "نو"}).encode() + b"\n")
    assert do_import(provider, g).sha256 == hashlib.sha256(g.read_bytes()).hexdigest()
    assert audit_events(provider)[-1]["details"]["columns"] == ["national_id", "given_name"]

    # A refused file leaves no event.
    count_before = len(audit_events(provider))
    (tmp_path / "refused.csv").write_text("mobile\n09121111111\n", encoding="utf-8")
    with pytest.raises(InvalidCitizen):
        do_import(provider, tmp_path / "refused.csv")
    assert len(audit_events(provider)) == count_before


def test_report_options(provider, tmp_path):
    f = tmp_path / "clean.csv"
    f.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n", encoding="utf-8")
    explicit = tmp_path / "report.csv"
    r = do_import(provider, f, explicit)
    assert r.rejected == 0 and r.report_path == str(explicit)
    assert explicit.read_text(encoding="utf-8").splitlines() == ["line,reason"]  # asked for: always written

    g = tmp_path / "bytes.csv"
    g.write_bytes(HEADER.encode() + f"{new_id()},09121234567,1985-02-03,caf\xe9,,,\n".encode("latin-1"))
    r = do_import(provider, g)
    assert [(x["line"], x["reason"]) for x in r.rejections] == [(2, "given_name: not UTF-8 text")]
    assert (tmp_path / "bytes.csv.rejected.csv").read_text(encoding="utf-8").splitlines() == \
        ["line,reason", "2,given_name: not UTF-8 text"]


def test_a_broken_file_loads_nothing(provider, tmp_path):
    from idp.citizens.records import InvalidCitizen

    rows = [f"{new_id()},09121234567,1985-02-03,,,," for _ in range(4500)]  # more than one batch
    rows.append(f'{new_id()},09121234567,1985-02-03,"unterminated,,,')
    f = tmp_path / "broken.csv"
    f.write_text(HEADER + "\n".join(rows) + "\n" + "\n".join(rows[:10]) + "\n", encoding="utf-8")
    before = count(provider)
    with pytest.raises(InvalidCitizen, match=r"broken.csv: line 4502: not readable as CSV \(unexpected end of data\)"):
        do_import(provider, f)
    assert count(provider) == before
    assert not (tmp_path / "broken.csv.rejected.csv").exists()

    for text, message in [("", "empty file"), ("mobile,birth_date\n", "the CSV header lacks national_id"),
                          ("national_id\n", "the CSV header has no column besides national_id"),
                          ("national_id,mobile,birth_date,mobile\n", "the CSV header repeats mobile"),
                          ('[{"national_id": "x"}]', "a JSON array")]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(InvalidCitizen, match=message):
            do_import(provider, bad)
    assert count(provider) == before


def test_one_import_at_a_time_on_postgres(provider, tmp_path):
    if provider.settings.database.url.startswith("sqlite"):
        pytest.skip("SQLite serialises writers with its own lock")
    import psycopg

    from idp.citizens.records import InvalidCitizen

    f = tmp_path / "one.csv"
    f.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n", encoding="utf-8")
    with psycopg.connect(provider.settings.database.url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('idp.citizens.import'))")
        with pytest.raises(InvalidCitizen, match="another citizens import is running"):
            do_import(provider, f)
        # Unlock explicitly: a closed connection's backend lets go of its locks only when it exits.
        other.execute("SELECT pg_advisory_unlock(hashtext('idp.citizens.import'))")
    assert do_import(provider, f).inserted == 1


def test_directory_interface(provider):
    from idp.citizens.directory import CitizenDirectory, CitizenRecord, SqlCitizenDirectory, find, profile

    nid, mobile = provider.add_citizen(birth_date="1975-07-07")
    with provider.app.app_context():
        sql = SqlCitizenDirectory()
        assert isinstance(sql, CitizenDirectory)
        record = sql.find(nid)
        assert record == CitizenRecord(nid, mobile, dt.date(1975, 7, 7), "آزمون", "شهروند")
        assert sql.find(new_id()) is None
        assert find(nid).mobile == mobile
        key = find(nid).citizen.subject_key

    class LiveRegistry:
        """A stand-in for a registry service: it knows a new number for nid, and a new person."""

        def __init__(self):
            self.people = {nid: CitizenRecord(nid, "+989350000000", dt.date(1975, 7, 7)),
                           (fresh := new_id()): CitizenRecord(fresh, "+989351111111", dt.date(2001, 1, 1))}
            self.fresh = fresh

        def find(self, national_id):
            return self.people.get(national_id)

    live = LiveRegistry()
    with provider.app.app_context():
        moved = find(nid, live)
        assert (moved.mobile, moved.citizen.subject_key) == ("+989350000000", key)
        assert profile(moved.citizen.id).given_name is None, "the registry's answer replaced the names"
        made = find(live.fresh, live)
        assert made.mobile == "+989351111111" and len(made.citizen.subject_key) == 43
        assert find(new_id(), live) is None


def test_fast_paths_agree_with_the_parsers():
    from idp.citizens.records import InvalidCitizen, _mobile, _national_id

    rng = random.Random(7)
    candidates = [f"{rng.randrange(10**10):010d}" for _ in range(20000)]
    candidates += [make_national_id(f"{rng.randrange(10**9):09d}") for _ in range(20000)]
    candidates += [d * 10 for d in "0123456789"] + ["00123456７9", "001234567٩"]
    for text in candidates:
        try:
            expected = parse_national_id(text)
        except InvalidNationalId:
            expected = None
        try:
            got = _national_id(text)
        except InvalidCitizen:
            got = None
        assert got == expected, text
    for text in ["09121234567", "+989121234567", "0912123456", "+98912123456a", "0812345678", "09١21234567",
                 "+989121234567 ", "091212345678", "+9891212345678"]:
        try:
            expected = parse_mobile(text)
        except InvalidMobile:
            expected = None
        try:
            got = _mobile(text)
        except InvalidCitizen:
            got = None
        assert got == expected, text


def test_seen_switches_to_a_bitmap(monkeypatch):
    from idp.citizens.import_report import Seen as _Seen

    monkeypatch.setattr(_Seen, "SWITCH", 5)
    ids = [new_id() for _ in range(20)]
    seen = _Seen()
    assert all(seen.add(i) for i in ids) and seen.bits is not None and seen.ids is None
    assert not any(seen.add(i) for i in ids)


def test_cli_import(env, tmp_path):  # noqa: F811
    assert run_idp(env, "db", "upgrade").returncode == 0
    f = tmp_path / "reg.csv"
    f.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n{bad_check_digit(new_id())},09121234567,"
                 "1985-02-03,,,,\n", encoding="utf-8")
    out = run_idp(env, "citizens", "import", str(f), "--report", str(tmp_path / "r.jsonl"))
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith("loaded 1 (inserted 1, updated 0, unchanged 0), rejected 1; 2 rows in ")
    assert "  line 3: national_id: the check digit does not match" in out.stdout
    assert out.stderr.splitlines() == [
        f"idp: 1 of 2 rows rejected, 1 imported; see {tmp_path / 'r.jsonl'}"]
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"line": 3,
                                                             "reason": "national_id: the check digit does not match"}


def test_cli_exit_status_3_still_prints_the_json(env, tmp_path):  # noqa: F811
    """Rejected rows: exit 3 (scripts see it), the JSON report on stdout, one line on stderr."""
    assert run_idp(env, "db", "upgrade").returncode == 0
    f = tmp_path / "reg.csv"
    f.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n{bad_check_digit(new_id())},09121234567,"
                 "1985-02-03,,,,\n", encoding="utf-8")
    assert run_idp(env, "citizens", "import", str(f)).returncode == 3
    out = run_idp(env, "citizens", "import", str(f), "--json")
    assert out.returncode == 3 and len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr
    data = json.loads(out.stdout)
    assert (data["unchanged"], data["rejected"], data["report"]) == (1, 1, str(f) + ".rejected.csv")
    assert data["seconds"] > 0 and data["rows_per_second"] > 0
    assert data["columns"] == list(HEADER.strip().split(",")) and len(data["sha256"]) == 64

    clean = tmp_path / "clean.csv"
    clean.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n", encoding="utf-8")
    out = run_idp(env, "citizens", "import", str(clean), "--json")
    assert out.returncode == 0 and out.stderr == "" and json.loads(out.stdout)["rejected"] == 0

    events = json.loads(run_idp(env, "audit", "tail", "--event", "registry_imported", "--json").stdout)
    assert [(e["details"]["rows"], e["details"]["inserted"], e["details"]["rejected"]) for e in events] == [
        (2, 1, 1), (2, 0, 1), (1, 1, 0)]
    assert events[-2]["details"]["sha256"] == data["sha256"] and events[-1]["details"]["file"] == str(clean)
    assert "3  some rows rejected" in run_idp(env, "citizens", "import", "--help").stdout


def test_cli_unreadable_file_is_one_line_and_nonzero(env, tmp_path):  # noqa: F811
    assert run_idp(env, "db", "upgrade").returncode == 0
    (tmp_path / "h.csv").write_text("id,phone\n1,2\n", encoding="utf-8")
    (tmp_path / "q.csv").write_text(HEADER + 'x,"y\n', encoding="utf-8")
    for target, message in [(tmp_path / "missing.csv", "no such file"), (tmp_path, "is a directory"),
                            (tmp_path / "h.csv", "the CSV header lacks national_id"),
                            (tmp_path / "q.csv", "line 2: not readable as CSV")]:
        out = run_idp(env, "citizens", "import", str(target), timeout=60)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and message in lines[0], out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""
        assert not list(tmp_path.glob("*.rejected.*"))


def test_cli_database_error_is_one_line(env, tmp_path, postgres_url):  # noqa: F811
    """A PostgreSQL error mid-import (here: no schema) is one line, with nothing loaded."""
    import uuid

    import psycopg

    from .conftest import PG_ADMIN_URL

    name = f"idp_empty_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        f = tmp_path / "one.csv"
        f.write_text(HEADER + f"{new_id()},09121234567,1985-02-03,,,,\n", encoding="utf-8")
        out = run_idp({**env, "IDP_DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"},
                  "citizens", "import", str(f))
        assert out.returncode == 1 and out.stderr.strip().splitlines() == [
            'idp: database: relation "citizens" does not exist (nothing was loaded)'], out.stderr
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
