"""A stream of users, each bringing a batch of labelled digits whose style shifts.

A *scenario* is a sequence of tasks (a style of digits: a pixel permutation, a rotation,
thicker or thinner strokes, new writers, a pair of classes). Users arrive one after
another; user ``u`` belongs to task ``u // users_per_task`` and brings ``batch_size``
samples drawn from that task's training pool. Everything about user ``u`` is a pure
function of ``(seed, u)``, so a resumed run sees exactly the batches it would have seen.

Presets follow the Avalanche definitions:

* ``permuted``  Permuted MNIST: every task applies its own fixed random pixel permutation
  (the first task too).
* ``rotated``   Rotated MNIST: every task rotates by its own angle drawn uniformly from
  [0°, 180°) (Avalanche draws from a range; the first task is drawn too).
* ``split``     Split MNIST: five class-incremental tasks of two classes each,
  {0,1}, {2,3}, ..., in order.
* ``styles``    the banking stream of the course notes: original digits, then thicker
  strokes (grey dilation), thinner strokes (grey erosion), a 30° rotation and new writers
  (a held-out slice of the training set that no earlier user drew from).

Datasets (through ``experiments.data``): ``digits`` (scikit-learn 8×8, the quick path),
``mnist``, ``fashion_mnist`` (28×28; ``downsample=2`` pools to 14×14).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from optlab.experiments import data
from scipy import ndimage

PRESETS = ("styles", "permuted", "rotated", "split")
DATASETS = ("digits", "mnist", "fashion_mnist")


@dataclasses.dataclass(frozen=True)
class Task:
    """One style of digits: ``kind`` in {identity, permute, rotate, dilate, erode, writers,
    classes} and its parameter (a permutation seed, an angle, a structuring size, a class
    tuple)."""

    name: str
    kind: str
    param: object = None


@dataclasses.dataclass(frozen=True)
class Batch:
    user: int
    task: int
    x: np.ndarray  # (N, H, W, 1) float32 in [0, 1]
    y: np.ndarray  # (N,) int32


@dataclasses.dataclass(frozen=True)
class Arrays:
    """Images ``(N, H, W, 1)`` float32 in [0, 1] and int32 labels, train and test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10


# ----------------------------------------------------------------------------- data


def load_arrays(name: str = "digits", data_dir: str | None = None, downsample: int = 1) -> Arrays:
    """Load a dataset with ``experiments.data.load`` as :class:`Arrays`.

    ``downsample=k`` average-pools k×k blocks (28×28 MNIST → 14×14 for k=2).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    ds = data.load(name, data_dir=data_dir)
    arrays = Arrays(name, ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes)
    if downsample > 1:
        arrays = dataclasses.replace(
            arrays,
            x_train=_pool(arrays.x_train, downsample),
            x_test=_pool(arrays.x_test, downsample),
        )
    return arrays


def _pool(x: np.ndarray, k: int) -> np.ndarray:
    n, h, w, c = x.shape
    h2, w2 = h // k, w // k
    return x[:, : h2 * k, : w2 * k].reshape(n, h2, k, w2, k, c).mean(axis=(2, 4))


# ----------------------------------------------------------------------------- styles


def apply_task(task: Task, x: np.ndarray) -> np.ndarray:
    """Render images ``x`` (N, H, W, 1) in the style of ``task``."""
    if task.kind in ("identity", "writers", "classes"):
        return x
    if task.kind == "permute":
        n, h, w, c = x.shape
        perm = np.random.default_rng(task.param).permutation(h * w)
        return x.reshape(n, h * w, c)[:, perm].reshape(n, h, w, c)
    if task.kind == "rotate":
        out = ndimage.rotate(x, float(task.param), axes=(1, 2), reshape=False, order=1)
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if task.kind in ("dilate", "erode"):
        op = ndimage.grey_dilation if task.kind == "dilate" else ndimage.grey_erosion
        return op(x, size=(1, task.param, task.param, 1)).astype(np.float32)
    raise ValueError(f"unknown task kind {task.kind!r}")


def make_tasks(preset: str, num_tasks: int, seed: int) -> list[Task]:
    """The task sequence of a preset (see the module docstring)."""
    rng = np.random.default_rng([seed, 7])
    if preset == "permuted":
        seeds = rng.integers(0, 2**31, num_tasks)
        return [Task(f"permute-{t}", "permute", int(s)) for t, s in enumerate(seeds)]
    if preset == "rotated":
        angles = rng.uniform(0.0, 180.0, num_tasks).round(1)
        return [Task(f"rotate-{a:g}", "rotate", float(a)) for a in angles]
    if preset == "split":
        pairs = [(2 * t, 2 * t + 1) for t in range(5)][:num_tasks]
        return [Task(f"classes-{a}{b}", "classes", (a, b)) for a, b in pairs]
    if preset == "styles":
        cycle = [
            Task("original", "identity"),
            Task("thick", "dilate", 2),
            Task("thin", "erode", 2),
            Task("rotate-30", "rotate", 30.0),
            Task("new-writers", "writers"),
        ]
        return [cycle[t % len(cycle)] for t in range(num_tasks)]
    raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")


class Stream:
    """Users arriving one after another over the tasks of a scenario.

    The training set is cut into a *reference* slice (what the first model was trained
    on and what drift is measured against), a *writers* slice (kept for the new-writers
    task) and the *pool* the other users draw from.
    """

    def __init__(
        self,
        arrays: Arrays,
        tasks: list[Task],
        *,
        users_per_task: int,
        batch_size: int,
        reference_size: int,
        seed: int = 0,
        eval_size: int = 500,
    ):
        self.arrays, self.tasks, self.seed = arrays, tasks, seed
        self.users_per_task, self.batch_size = users_per_task, batch_size
        n = len(arrays.y_train)
        order = np.random.default_rng([seed, 1]).permutation(n)
        writers = max(n // 5, batch_size)
        self.reference_idx = order[:reference_size]
        self.writers_idx = order[reference_size : reference_size + writers]
        self.pool_idx = order[reference_size + writers :]
        if len(self.pool_idx) < batch_size:
            raise ValueError(f"dataset too small for batch_size={batch_size}")
        self.eval_size = eval_size

    @property
    def num_users(self) -> int:
        return len(self.tasks) * self.users_per_task

    def task_of(self, user: int) -> int:
        return user // self.users_per_task

    def reference(self) -> tuple[np.ndarray, np.ndarray]:
        """The reference data (first task's style, all classes it allows)."""
        idx = self._class_filter(self.reference_idx, self.tasks[0])
        return apply_task(self.tasks[0], self.arrays.x_train[idx]), self.arrays.y_train[idx]

    def user_batch(self, user: int) -> Batch:
        if not 0 <= user < self.num_users:
            raise ValueError(f"user {user} outside the stream of {self.num_users} users")
        t = self.task_of(user)
        task = self.tasks[t]
        source = self.writers_idx if task.kind == "writers" else self.pool_idx
        source = self._class_filter(source, task)
        rng = np.random.default_rng([self.seed, 2, user])
        idx = rng.choice(source, self.batch_size, replace=False)
        x = apply_task(task, self.arrays.x_train[idx])
        return Batch(user, t, x.astype(np.float32), self.arrays.y_train[idx].astype(np.int32))

    def eval_set(self, task_id: int) -> tuple[np.ndarray, np.ndarray]:
        """A fixed test-set slice in the style of task ``task_id`` (for R[j, i]).

        Every task is evaluated on the first ``eval_size`` test images, except new writers,
        evaluated on the last ``eval_size``: otherwise its column of R would copy the
        original style's. The two slices are disjoint when the test set holds at least
        ``2 × eval_size`` images (MNIST: 10 000); on a smaller one (scikit-learn digits:
        360) they overlap.
        """
        task = self.tasks[task_id]
        all_test = np.arange(len(self.arrays.y_test))
        idx = self._class_filter(all_test, task, self.arrays.y_test)
        idx = idx[-self.eval_size :] if task.kind == "writers" else idx[: self.eval_size]
        return apply_task(task, self.arrays.x_test[idx]), self.arrays.y_test[idx]

    def _class_filter(self, idx: np.ndarray, task: Task, labels: np.ndarray | None = None):
        if task.kind != "classes":
            return idx
        labels = self.arrays.y_train if labels is None else labels
        return idx[np.isin(labels[idx], task.param)]


def corrupt(batch: Batch, kind: str = "nan") -> Batch:
    """A deliberately broken copy of ``batch`` (for tests and fault-injection runs)."""
    x, y = batch.x.copy(), batch.y.copy()
    if kind == "nan":
        x[: max(1, len(x) // 10)] = np.nan
    elif kind == "range":
        x = x * 255.0
    elif kind == "labels":
        y[:3] = 42
    elif kind == "shape":
        x = x[:, :-1]
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return dataclasses.replace(batch, x=x, y=y)
