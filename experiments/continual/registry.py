"""A model registry and run ledger in SQLite (stdlib ``sqlite3``), one file per run folder.

Tables:

* ``models``       every model version: lineage (``parent``), the user at which it was made,
                   status ``candidate`` / ``deployed`` / ``retired`` / ``rolled_back``, optimizer,
                   hyperparameters, metrics, wall time, peak memory, reason; weights are an
                   ``.npz`` file beside the database (``models/v{version}.npz``)
* ``runs``         every training run (search trials and final fits)
* ``users``        one row per processed user (primary key: a user is never processed twice)
* ``validation``   every validation report
* ``ledger``       where every arrived sample went: ``trained``, ``held_out``, ``quarantined``
                   (``pending`` until a retrain consumes it)
* ``events``       triggers, canary decisions, alerts
* ``evals``        accuracy of the deployed model on each task's evaluation set after each user
* ``state``        key/value (pointer to the committed strategy state file, config)

All of one user's writes happen in one transaction (:meth:`Registry.transaction`); files are
written (atomically, by rename) before the transaction that points at them commits, so a
SIGKILL at any moment leaves either the previous user's state or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    version INTEGER PRIMARY KEY, parent INTEGER, user INTEGER, status TEXT NOT NULL,
    optimizer TEXT, hparams TEXT, metrics TEXT, weights TEXT NOT NULL,
    wall_time_s REAL, peak_memory_mb REAL, reason TEXT, created REAL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user INTEGER, kind TEXT, optimizer TEXT,
    hparams TEXT, metrics TEXT, wall_time_s REAL, peak_memory_mb REAL);
CREATE TABLE IF NOT EXISTS users (
    user INTEGER PRIMARY KEY, task INTEGER, samples INTEGER, status TEXT, champion INTEGER,
    committed REAL);
CREATE TABLE IF NOT EXISTS validation (user INTEGER PRIMARY KEY, passed INTEGER, report TEXT);
CREATE TABLE IF NOT EXISTS ledger (
    user INTEGER, disposition TEXT, count INTEGER, PRIMARY KEY (user, disposition));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user INTEGER, kind TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS evals (
    user INTEGER, version INTEGER, task INTEGER, accuracy REAL, PRIMARY KEY (user, task));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
"""

STATUSES = ("candidate", "deployed", "retired", "rolled_back")
TABLES = ("models", "runs", "users", "validation", "ledger", "events", "evals", "state")


class RegistryDamagedError(ValueError):
    """``registry.sqlite`` is unreadable or does not hold what the run's other files imply."""


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "registry.sqlite"
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)

    @classmethod
    def open_existing(cls, root: str | Path) -> Registry:
        """The registry in ``root`` for resuming, checked before anything writes to it.

        Raises :class:`RegistryDamagedError` if the file is missing or empty, fails SQLite's
        ``PRAGMA quick_check`` (truncated, overwritten) or lacks one of :data:`TABLES`.
        """
        path = Path(root) / "registry.sqlite"
        if not path.is_file() or path.stat().st_size == 0:
            raise RegistryDamagedError(f"{path} is {'empty' if path.is_file() else 'missing'}")
        try:
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as err:
            raise RegistryDamagedError(f"{path} cannot be read: {err}") from None
        if problems != ["ok"]:
            raise RegistryDamagedError(f"{path} fails SQLite's quick_check: {problems[0]}")
        missing = [t for t in TABLES if t not in tables]
        if missing:
            raise RegistryDamagedError(f"{path} lacks the table(s) {', '.join(missing)}")
        return cls(root)

    def row_counts(self) -> dict[str, int]:
        """The number of rows in each of :data:`TABLES`."""
        return {t: self._query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in TABLES}

    def ledger_by_user(self) -> dict[int, int]:
        """Samples accounted for per user, whatever their disposition."""
        rows = self._query("SELECT user, SUM(count) FROM ledger GROUP BY user ORDER BY user")
        return {u: int(c) for u, c in rows}

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _query(self, sql: str, args=()) -> list[tuple]:
        return self.conn.execute(sql, args).fetchall()

    # -- state ------------------------------------------------------------------------
    def set_state(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, json.dumps(value)))

    def get_state(self, key: str, default=None):
        rows = self._query("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    # -- models -----------------------------------------------------------------------
    def next_version(self) -> int:
        return (self._query("SELECT MAX(version) FROM models")[0][0] or 0) + 1

    def weights_path(self, version: int) -> Path:
        return self.root / "models" / f"v{version}.npz"

    def add_model(
        self,
        version: int,
        *,
        parent: int | None,
        user: int,
        status: str,
        optimizer: str,
        hparams: dict,
        metrics: dict,
        wall_time_s: float,
        peak_memory_mb: float,
        reason: str = "",
    ) -> None:
        """Record a model version whose weights are already at :meth:`weights_path`."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if not self.weights_path(version).exists():
            raise OSError(f"weights for model v{version} missing: {self.weights_path(version)}")
        self.conn.execute(
            "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                version,
                parent,
                user,
                status,
                optimizer,
                json.dumps(hparams),
                json.dumps(metrics),
                str(self.weights_path(version).relative_to(self.root)),
                wall_time_s,
                peak_memory_mb,
                reason,
                time.time(),
            ),
        )

    def set_status(self, version: int, status: str, reason: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if reason is None:
            self.conn.execute("UPDATE models SET status = ? WHERE version = ?", (status, version))
        else:
            self.conn.execute(
                "UPDATE models SET status = ?, reason = ? WHERE version = ?",
                (status, reason, version),
            )

    def deployed(self) -> int | None:
        rows = self._query("SELECT version FROM models WHERE status = 'deployed'")
        if len(rows) > 1:
            raise RuntimeError(f"registry corrupt: {len(rows)} deployed models")
        return rows[0][0] if rows else None

    def _records(self, query: str) -> list[dict]:
        """The rows of ``query`` as dicts, their JSON ``hparams`` and ``metrics`` decoded."""
        cur = self.conn.execute(query)
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            rec = dict(zip(names, row, strict=True))
            rec["hparams"], rec["metrics"] = json.loads(rec["hparams"]), json.loads(rec["metrics"])
            out.append(rec)
        return out

    def models(self) -> list[dict]:
        return self._records("SELECT * FROM models ORDER BY version")

    # -- runs, users, reports, ledger, events, evals -----------------------------------
    def add_run(self, user, kind, optimizer, hparams, metrics, wall_time_s, peak_memory_mb):
        self.conn.execute(
            "INSERT INTO runs (user, kind, optimizer, hparams, metrics, wall_time_s, "
            "peak_memory_mb) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                user,
                kind,
                optimizer,
                json.dumps(hparams),
                json.dumps(metrics),
                wall_time_s,
                peak_memory_mb,
            ),
        )

    def runs(self) -> list[dict]:
        return self._records("SELECT * FROM runs ORDER BY id")

    def add_user(self, user: int, task: int, samples: int, status: str, champion) -> None:
        self.conn.execute(
            "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)",
            (user, task, samples, status, champion, time.time()),
        )

    def processed_users(self) -> list[int]:
        return [r[0] for r in self._query("SELECT user FROM users ORDER BY user")]

    def add_validation(self, user: int, report: dict) -> None:
        self.conn.execute(
            "INSERT INTO validation VALUES (?, ?, ?)",
            (user, int(report["passed"]), json.dumps(report)),
        )

    def validation_reports(self, failed_only: bool = False) -> dict[int, dict]:
        sql = "SELECT user, report FROM validation" + (" WHERE passed = 0" if failed_only else "")
        return {u: json.loads(r) for u, r in self._query(sql + " ORDER BY user")}

    def ledger_add(self, user: int, disposition: str, count: int) -> None:
        if count:
            self.conn.execute(
                "INSERT INTO ledger VALUES (?, ?, ?) ON CONFLICT(user, disposition) "
                "DO UPDATE SET count = count + excluded.count",
                (user, disposition, count),
            )

    def ledger_move(self, disposition_from: str, disposition_to: str) -> int:
        """Move every ``disposition_from`` row to ``disposition_to``; returns the count."""
        rows = self._query(
            "SELECT user, count FROM ledger WHERE disposition = ?", (disposition_from,)
        )
        for user, count in rows:
            self.ledger_add(user, disposition_to, count)
        self.conn.execute("DELETE FROM ledger WHERE disposition = ?", (disposition_from,))
        return sum(c for _, c in rows)

    def ledger_totals(self) -> dict[str, int]:
        rows = self._query("SELECT disposition, SUM(count) FROM ledger GROUP BY disposition")
        return {d: int(c) for d, c in rows}

    def add_event(self, user: int, kind: str, detail: dict) -> None:
        self.conn.execute(
            "INSERT INTO events (user, kind, detail) VALUES (?, ?, ?)",
            (user, kind, json.dumps(detail)),
        )

    def events(self, kind: str | None = None) -> list[dict]:
        sql, args = "SELECT user, kind, detail FROM events", ()
        if kind:
            sql, args = sql + " WHERE kind = ?", (kind,)
        rows = self._query(sql + " ORDER BY id", args)
        return [{"user": u, "kind": k, **json.loads(d)} for u, k, d in rows]

    def add_eval(self, user: int, version: int, task: int, accuracy: float) -> None:
        self.conn.execute("INSERT INTO evals VALUES (?, ?, ?, ?)", (user, version, task, accuracy))

    def evals(self) -> list[tuple[int, int, int, float]]:
        return self._query("SELECT user, version, task, accuracy FROM evals ORDER BY user, task")
