"""What an import tells: its counts, the national IDs seen (a repeated one is a rejected row),
and the rejected rows with their line and reason, written in line order to the report file.
"""
from __future__ import annotations

import csv
import heapq
import itertools
import json
import operator
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .records import JSON_SUFFIXES, KEEP_REJECTIONS, InvalidCitizen


@dataclass
class ImportReport:
    """What an import did. ``loaded`` = inserted + updated + unchanged (every valid row)."""

    rows: int = 0
    loaded: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: list[dict] = field(default_factory=list)  # the first KEEP_REJECTIONS
    report_path: str | None = None
    seconds: float = 0.0
    columns: list[str] = field(default_factory=list)  # the columns the file holds
    sha256: str | None = None  # of the file's bytes as read
    guardian_links: int | None = None  # links written, when the file has a guardian_national_id column

    @property
    def rows_per_second(self) -> float:
        return round(self.rows / self.seconds, 1) if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"rows": self.rows, "loaded": self.loaded, "inserted": self.inserted, "updated": self.updated,
                "unchanged": self.unchanged, "rejected": self.rejected, "seconds": round(self.seconds, 3),
                "rows_per_second": self.rows_per_second, "report": self.report_path, "columns": self.columns,
                "sha256": self.sha256, "rejections": self.rejections,
                **({} if self.guardian_links is None else {"guardian_links": self.guardian_links})}


class Seen:
    """National IDs already read: a set, then (past a few million) a 125 MB bitmap of the first
    nine digits, so a national-scale file needs bounded memory."""

    SWITCH = 1 << 22

    def __init__(self):
        self.ids: set[int] | None = set()
        self.bits: bytearray | None = None

    def add(self, national_id: str) -> bool:
        """False if it was already there."""
        key = int(national_id[:9])
        if self.bits is None:
            ids = self.ids
            if key in ids:
                return False
            ids.add(key)
            if len(ids) > self.SWITCH:
                self.bits = bytearray(10**9 // 8 + 1)
                for k in ids:
                    self.bits[k >> 3] |= 1 << (k & 7)
                self.ids = None
            return True
        bits, i, mask = self.bits, key >> 3, 1 << (key & 7)
        if bits[i] & mask:
            return False
        bits[i] |= mask
        return True


class Rejections:
    """Rejected rows: counted, the first few kept, all spooled to temporary files. Rows come in
    runs, each in line order (the rows as read; then the new citizens that lacked a column,
    found only once the file was staged); the report merges the runs by line."""

    def __init__(self, report: ImportReport):
        self.report = report
        self.runs: list[tuple[list[dict], IO[str]]] = []
        self.new_run()

    def new_run(self) -> None:
        """Start a run of rejections whose lines come after none of its own, in order."""
        self.kept: list[dict] = []
        self.spool = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")
        self.writer = csv.writer(self.spool)
        self.runs.append((self.kept, self.spool))

    def add(self, line: int, reason: str) -> None:
        self.report.rejected += 1
        if len(self.kept) < KEEP_REJECTIONS:
            self.kept.append({"line": line, "reason": reason})
        self.writer.writerow((line, reason))

    def finish(self) -> None:
        """The report's first KEEP_REJECTIONS rejections, in line order."""
        kept = heapq.merge(*(run for run, _ in self.runs), key=operator.itemgetter("line"))
        self.report.rejections = list(itertools.islice(kept, KEEP_REJECTIONS))

    def write(self, destination: Path) -> None:
        """The report file, CSV (line,reason) or JSON lines (by extension), replaced atomically."""
        for _, spool in self.runs:
            spool.seek(0)
        rows = heapq.merge(*(csv.reader(spool) for _, spool in self.runs), key=lambda row: int(row[0]))
        as_json = destination.suffix.lower() in (*JSON_SUFFIXES, ".json")
        tmp = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as out:
                writer = None if as_json else csv.writer(out)
                if writer:
                    writer.writerow(("line", "reason"))
                for line, reason in rows:
                    if writer:
                        writer.writerow((line, reason))
                    else:
                        out.write(json.dumps({"line": int(line), "reason": reason}, ensure_ascii=False) + "\n")
            os.replace(tmp, destination)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InvalidCitizen(f"{destination}: cannot write the report ({exc.strerror or exc})") from None

    def close(self) -> None:
        for _, spool in self.runs:
            spool.close()


