"""The serving tables, beside the continual registry in the run's ``registry.sqlite``.

* ``feedback``          every acknowledged feedback sample: user, label, the image at the
                        model's input size (float32 bytes), the version that answered, the
                        stable and canary versions with whether each was right (the McNemar
                        pairs), the rollout it belongs to, and its disposition ``status``:
                        ``new`` → ``validated`` or ``quarantined`` (in batches) → ``trained``
* ``feedback_batches``  each validated batch: its id range, the validation report, drift

Rollout decisions are ``events`` of kind ``rollout`` (the continual loop's table), model
versions are ``models`` rows (a canary is a ``candidate``), and the serving state is in
``state``: ``rollout`` (:class:`~.rollout.Rollout`), ``retrain_job``, ``serve_buffer``,
``serve_batches_since_retrain``. Tables are created if missing, so any continual run folder
is servable and stays readable by ``optlab continual``.
"""

from __future__ import annotations

import json
import time

import numpy as np
from optlab.experiments.continual.registry import Registry

SERVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, label INTEGER NOT NULL,
    image BLOB NOT NULL, served INTEGER NOT NULL, stable INTEGER NOT NULL,
    stable_correct INTEGER NOT NULL, canary INTEGER, canary_correct INTEGER,
    rollout INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'new', batch INTEGER,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS feedback_status ON feedback (status, id);
CREATE TABLE IF NOT EXISTS feedback_batches (
    batch INTEGER PRIMARY KEY, first_id INTEGER, last_id INTEGER, passed INTEGER,
    drift INTEGER, min_p_value REAL, stable_accuracy REAL, report TEXT, created REAL);
"""

FEEDBACK_COLUMNS = (
    "user", "label", "image", "served", "stable", "stable_correct", "canary",
    "canary_correct", "rollout", "created",
)  # fmt: skip


class ServeStore(Registry):
    """The run's registry with the serving tables (one SQLite connection, WAL mode)."""

    def __init__(self, root):
        super().__init__(root)
        self.conn.executescript(SERVE_SCHEMA)

    def add_feedback(self, rows: list[dict]) -> list[int]:
        """Insert ``rows`` (dicts of :data:`FEEDBACK_COLUMNS` less ``created``) in one
        committed transaction; returns their ids. Durable when this returns (WAL,
        ``synchronous=FULL``)."""
        ids = []
        now = time.time()
        placeholders = ", ".join("?" * len(FEEDBACK_COLUMNS))
        with self.transaction():
            for row in rows:
                values = [row.get(c) for c in FEEDBACK_COLUMNS[:-1]] + [now]
                cur = self.conn.execute(
                    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES ({placeholders})",
                    values,
                )
                ids.append(cur.lastrowid)
        return ids

    def feedback_ids(self) -> dict[int, tuple[str, int]]:
        """``{id: (user, label)}`` of every stored feedback sample."""
        return {i: (u, y) for i, u, y in self._query("SELECT id, user, label FROM feedback")}

    def oldest(self, status: str, limit: int) -> list[tuple]:
        """``(id, label, image bytes, stable_correct)`` of the oldest ``limit`` rows."""
        return self._query(
            "SELECT id, label, image, stable_correct FROM feedback WHERE status = ? "
            "ORDER BY id LIMIT ?",
            (status, limit),
        )

    def count(self, status: str) -> int:
        return self._query("SELECT COUNT(*) FROM feedback WHERE status = ?", (status,))[0][0]

    def set_feedback_status(self, first: int, last: int, status: str, *, old: str, batch=None):
        self.conn.execute(
            "UPDATE feedback SET status = ?, batch = COALESCE(?, batch) "
            "WHERE id BETWEEN ? AND ? AND status = ?",
            (status, batch, first, last, old),
        )

    def add_batch(self, batch: int, first: int, last: int, report: dict, accuracy: float):
        self.conn.execute(
            "INSERT INTO feedback_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                batch, first, last, int(report["passed"]), int(report["drift"]),
                min(report["p_values"].values(), default=1.0), accuracy,
                json.dumps(report), time.time(),
            ),
        )  # fmt: skip

    def next_batch(self) -> int:
        return (self._query("SELECT MAX(batch) FROM feedback_batches")[0][0] or 0) + 1

    def pairs(self, rollout: int, canary: int, since: int) -> tuple[np.ndarray, np.ndarray, int]:
        """McNemar pairs of a stage: (stable right, canary right, last id) of the feedback
        after ``since`` that both versions of ``rollout`` scored."""
        rows = self._query(
            "SELECT id, stable_correct, canary_correct FROM feedback "
            "WHERE rollout = ? AND canary = ? AND id > ? ORDER BY id",
            (rollout, canary, since),
        )
        if not rows:
            return np.zeros(0, bool), np.zeros(0, bool), since
        ids, a, z = (np.array(col) for col in zip(*rows, strict=True))
        return a.astype(bool), z.astype(bool), int(ids[-1])

    def arrays(self, status: str, max_id: int, input_shape) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of the ``status`` feedback with id ≤ ``max_id``."""
        rows = self._query(
            "SELECT label, image FROM feedback WHERE status = ? AND id <= ? ORDER BY id",
            (status, max_id),
        )
        x = np.zeros((len(rows), *input_shape), np.float32)
        for i, (_, blob) in enumerate(rows):
            x[i] = np.frombuffer(blob, np.float32).reshape(input_shape)
        return x, np.array([y for y, _ in rows], np.int32)

    def max_feedback_id(self) -> int:
        return self._query("SELECT COALESCE(MAX(id), 0) FROM feedback")[0][0]

    def accuracy_by_version(self) -> dict[int, tuple[int, int]]:
        """``{version: (right, scored)}`` over all feedback, as stable or as canary."""
        rows = self._query(
            "SELECT v, SUM(ok), COUNT(*) FROM ("
            "SELECT stable AS v, stable_correct AS ok FROM feedback UNION ALL "
            "SELECT canary, canary_correct FROM feedback WHERE canary IS NOT NULL) GROUP BY v"
        )
        return {v: (int(r), int(n)) for v, r, n in rows}

    def accuracy_over_time(self, window: int) -> list[dict]:
        """Per version, its accuracy over consecutive windows of ``window`` feedback ids."""
        rows = self._query(
            "SELECT v, (id - 1) / ?, SUM(ok), COUNT(*), MAX(created) FROM ("
            "SELECT id, created, stable AS v, stable_correct AS ok FROM feedback UNION ALL "
            "SELECT id, created, canary, canary_correct FROM feedback "
            "WHERE canary IS NOT NULL) GROUP BY v, (id - 1) / ? ORDER BY v, 2",
            (window, window),
        )
        return [
            {"version": v, "window": int(w), "accuracy": r / n, "samples": n, "time": t}
            for v, w, r, n, t in rows
        ]
