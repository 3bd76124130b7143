"""The failover drill: whole logins on two `idp serve` nodes while the store's Redis primary is
killed (Redis Sentinel promotes its replica), then while the database's primary is stopped and
its standby promoted (a multi-host URL). Prints each failure's window and the durable counts;
exits 1 if a drill shows what must not happen (a wrong answer, a login with a code but not
exactly one auth event, a counter off, a refresh family lost, a node that needed a restart).

Everything runs on loopback ports of its own: a Redis primary, a replica and three Sentinels
(Debian's redis-server), a PostgreSQL primary and a pg_basebackup standby (initdb/pg_ctl; as
root it runs them as the postgres user). Bounded: a few hundred logins per drill, about a
minute each. The same drills run in CI as tests/test_failover.py.

    python bench/failover.py [--people 400] [--threads 4] [--workers 1] [--down-after-ms 1000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import drills  # noqa: E402 - after the repository root is on the path
from tests.ha import PostgresPair, RedisSentinelSet, pg_bindir  # noqa: E402
from tests.test_multinode import Deployment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--people", type=int, default=400, help="citizens per drill, each logs in once at most")
    ap.add_argument("--threads", type=int, default=4, help="logins at once")
    ap.add_argument("--workers", type=int, default=1, help="workers per node (two nodes)")
    ap.add_argument("--down-after-ms", type=int, default=1000, help="Sentinel's down-after-milliseconds")
    args = ap.parse_args(argv)
    bindir = pg_bindir()
    if bindir is None:
        print("failover: initdb/pg_ctl not found (install PostgreSQL's server package)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="idp-failover-") as tmp:
        redis_set = RedisSentinelSet(Path(tmp) / "redis", down_after_ms=args.down_after_ms)
        pair = PostgresPair(bindir)
        try:
            redis_set.start()
            pair.start()
            for name, drill in (("store", drills.redis_failover), ("database", drills.postgres_switchover)):
                dep = Deployment(Path(tmp) / name, pair.create_database(f"idp_{name}"), redis_set.url,
                                 workers=args.workers, threads=4)
                try:
                    dep.start_node(), dep.start_node()
                    server = redis_set if drill is drills.redis_failover else pair
                    result = drill(dep, server, people=args.people, threads=args.threads)
                finally:
                    dep.stop()
                print("\n".join(result.lines()), flush=True)
                results.append(result)
        finally:
            pair.destroy()
            redis_set.stop()
    found = [f"{r.name}: {p}" for r in results for p in drills.problems(r)]
    for line in found:
        print(f"failover: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
