"""Benchmark `idp citizens import` on PostgreSQL: insert, re-import unchanged, re-import changed.

    python bench/import_citizens.py [--rows 1000000] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]

Generates N synthetic citizens (unique, valid national IDs; valid mobiles) into a CSV, creates a
fresh database, runs `idp db upgrade` against it, imports through the CLI exactly as an operator
would (`python -m idp.cli citizens import FILE --json`), then imports the same file again (every
row unchanged) and a second file with the same national IDs and new mobiles (every row
updated). The database and the files are removed at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from idp.citizens.national_id import make_national_id  # noqa: E402

GIVEN = ("علی", "محمد", "حسین", "زهرا", "فاطمه", "مریم", "رضا", "سارا", "مهدی", "نرگس")
GIVEN_LATIN = ("Ali", "Mohammad", "Hossein", "Zahra", "Fatemeh", "Maryam", "Reza", "Sara", "Mahdi", "Narges")
FAMILY = ("رضایی", "محمدی", "حسینی", "احمدی", "کریمی", "موسوی", "جعفری", "کاظمی", "رحیمی", "صادقی")
FAMILY_LATIN = ("Rezaei", "Mohammadi", "Hosseini", "Ahmadi", "Karimi", "Mousavi", "Jafari", "Kazemi", "Rahimi",
                "Sadeghi")
PREFIXES = ("0912", "0913", "0919", "0935", "0936", "0937", "0938", "0939", "0901", "0990")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, {platform.platform()}"


def national_ids(n: int, seed: int) -> list[str]:
    """n distinct valid national IDs in random order (never the unissued all-same-digit ones)."""
    rng = random.Random(seed)
    out = []
    for first_nine in rng.sample(range(10**9), n + 16):
        nid = make_national_id(f"{first_nine:09d}")
        if nid != nid[0] * 10:
            out.append(nid)
            if len(out) == n:
                break
    return out


def write_csv(path: Path, ids: list[str], seed: int) -> None:
    """Stream the rows to a CSV file in large chunks."""
    rng = random.Random(seed)
    start, span = dt.date(1930, 1, 1).toordinal(), 94 * 365
    rand, choice = rng.randrange, rng.choice
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("national_id,mobile,birth_date,given_name,family_name,given_name_latin,family_name_latin\n")
        chunk = []
        for nid in ids:
            g, f = rand(10), rand(10)
            chunk.append(f"{nid},{choice(PREFIXES)}{rand(10**7):07d},"
                         f"{dt.date.fromordinal(start + rand(span)).isoformat()},"
                         f"{GIVEN[g]},{FAMILY[f]},{GIVEN_LATIN[g]},{FAMILY_LATIN[f]}\n")
            if len(chunk) >= 10000:
                out.write("".join(chunk))
                chunk.clear()
        out.write("".join(chunk))


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "idp.cli", *args], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"idp {' '.join(args)} failed: {out.stderr.strip()}")
    return out


def timed_import(env: dict, label: str, csv_file: Path) -> dict:
    started = time.perf_counter()
    out = run_cli(env, "citizens", "import", str(csv_file), "--json")
    wall = time.perf_counter() - started
    r = json.loads(out.stdout)
    print(f"{label:<22} rows {r['rows']:>10,}  inserted {r['inserted']:>10,}  updated {r['updated']:>10,}  "
          f"unchanged {r['unchanged']:>10,}  rejected {r['rejected']:>4,}  "
          f"import {r['seconds']:7.1f} s  {r['rows_per_second']:>10,.0f} rows/s  (process wall {wall:.1f} s)",
          flush=True)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--admin-url", default=os.environ.get("IDP_TEST_PG_ADMIN",
                                                              "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--keep-files", action="store_true", help="Keep the generated CSV files.")
    args = parser.parse_args()

    import psycopg

    print(f"machine: {machine()}")
    print(f"python {platform.python_version()}, psycopg {psycopg.__version__}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="idp-bench-"))
    first, second = workdir / "citizens.csv", workdir / "citizens-new-mobiles.csv"
    started = time.perf_counter()
    ids = national_ids(args.rows, args.seed)
    write_csv(first, ids, args.seed + 1)
    write_csv(second, ids, args.seed + 2)  # same people, new mobiles (and other names/dates)
    print(f"generated 2 x {args.rows:,} rows ({first.stat().st_size / 1e6:.0f} MB each) "
          f"in {time.perf_counter() - started:.1f} s", flush=True)

    name = f"idp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.admin_url, autocommit=True) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f'CREATE DATABASE "{name}"')
    print(f"PostgreSQL {server}, database {name}", flush=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir),
           "IDP_SERVER_SECRET_KEY": "b" * 48, "IDP_DATABASE_URL": f"{args.admin_url.rsplit('/', 1)[0]}/{name}",
           "IDP_KEYS_DIR": str(workdir / "keys")}
    try:
        run_cli(env, "db", "upgrade")
        timed_import(env, "insert (empty table)", first)
        timed_import(env, "re-import, unchanged", first)
        timed_import(env, "re-import, all updated", second)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not args.keep_files:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"files kept in {workdir}")


if __name__ == "__main__":
    main()
