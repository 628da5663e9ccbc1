"""The continual-learning loop: validate → (trigger) → search → train → canary → monitor.

One user at a time; every user's processing commits in one SQLite transaction together with
a pointer to the strategy-state file written just before it, so ``--resume`` after a SIGKILL
continues at the first uncommitted user: no batch is lost or processed twice.

Per user ``u`` (the "banking app" of the course notes):

1. **validate** the batch (:mod:`.validation`); a failing batch is saved under
   ``quarantine/`` with its report and never trained on; drift is tested against the newest
   batch the deployed model has learned (the stream's reference data at first);
2. split it into train / validation (for the search) / held-out traffic; measure the
   deployed model on the held-out part before anything trains on it (prequential accuracy);
3. **trigger** (:mod:`.triggers`): every N users, drift, or an accuracy drop;
4. on a trigger, **search + train**: for each optimizer, a population of learning rates
   warm-started from the deployed weights trains at once (``engine.fit_population``, one
   ``jax.vmap``) on the pending data (plus the replay buffer, or with the EWC penalty); the
   best on the validation part (``tuning.choose``) is the challenger, recorded as a
   ``candidate``;
5. **canary**: the challenger answers a share of simulated traffic (the pending users'
   held-out samples and an equal number from the fixed canary set) beside the champion; the
   exact McNemar test decides promotion or rollback (:mod:`.canary`);
6. **monitor** (:mod:`.monitoring`): accuracy on the canary set and on every task's evaluation
   set after each user, drift p-values, alerts.

The sample ledger accounts for every sample: ``held_out`` (validation and traffic parts),
``pending`` → ``trained`` once a retrain consumes it, ``quarantined``. The stream's end
forces a last retrain so that nothing stays pending.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import sys
import time
from pathlib import Path

import jax
import numpy as np
from optlab import optimizers
from optlab.experiments import engine, tuning
from optlab.experiments.data import split_validation
from optlab.experiments.report import atomic_write_text, describe_machine, machine, peak_memory_mb
from tqdm.auto import tqdm

from . import canary, metrics, monitoring, options, strategies, trainer, triggers, validation
from .registry import Registry, RegistryDamagedError, load_npz, save_npz
from .stream import DATASETS, PRESETS, Stream, corrupt, load_arrays, make_tasks


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _hold_out(indices: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held)``: ``count`` of ``indices`` held out by :func:`split_validation`."""
    if count <= 0:
        return indices, indices[:0]
    if count >= len(indices):
        return indices[:0], indices
    kept, _, held, _ = split_validation(indices, indices, count, seed=seed, stratify=False)
    return kept, held


@dataclasses.dataclass
class LoopConfig:
    dataset: str = "digits"
    preset: str = "styles"
    data_dir: str | None = None
    downsample: int = 1
    num_tasks: int = 5
    users_per_task: int = 2
    user_batch: int = 100  # samples each user brings
    reference_size: int = 300
    eval_size: int = 500
    canary_size: int = 200
    seed: int = 0
    # model and training
    widths: tuple[int, ...] = (64,)
    dropout: float = 0.0
    batch_size: int = 32
    epochs: int = 5
    initial_epochs: int = 20
    strategy: str = "replay"
    buffer_size: int = 300
    ewc_lambda: float = 100.0
    search: dict = dataclasses.field(
        default_factory=lambda: {"sgd": [0.03, 0.1], "adam": [1e-3, 3e-3]}
    )
    validation_fraction: float = 0.2
    held_out_fraction: float = 0.2
    # validation, triggers, canary
    drift_alpha: float = 0.01
    min_reference: int = 50  # smallest batch that may become the drift reference
    trigger_rules: tuple[str, ...] = ("every", "drift", "accuracy")
    every_n: int = 3
    max_drop: float = 0.05
    canary_share: float = 0.5
    canary_alpha: float = 0.05
    canary_min_gain: float | None = None
    # fault injection (tests, demos)
    corrupt_users: tuple[int, ...] = ()
    worse_challenger_users: tuple[int, ...] = ()
    slow_user_s: float = 0.0  # sleep after each commit (kill-and-resume tests)

    def __post_init__(self):
        """Refuse a value no run can use, with an :class:`~.options.InvalidOption` naming the
        field: counts are positive integers, fractions and thresholds lie in range, the search
        names registered optimizers, each with learning rates, and the injected faults
        name users of the stream."""
        self.widths = tuple(self.widths)
        self.trigger_rules = tuple(self.trigger_rules)
        self.corrupt_users = tuple(self.corrupt_users)
        self.worse_challenger_users = tuple(self.worse_challenger_users)
        options.names("dataset", (self.dataset,), DATASETS)
        options.names("preset", (self.preset,), PRESETS)
        options.names("strategy", (self.strategy,), strategies.STRATEGIES)
        options.names("trigger_rules", self.trigger_rules, triggers.RULES)
        for name in (
            "downsample", "num_tasks", "users_per_task", "user_batch", "reference_size",
            "eval_size", "canary_size", "batch_size", "epochs", "initial_epochs",
            "buffer_size", "min_reference", "every_n",
        ):  # fmt: skip
            options.count(name, getattr(self, name))
        options.count("seed", self.seed, minimum=0)
        split_tasks = len(make_tasks("split", self.num_tasks, 0))  # one per pair of classes
        if self.preset == "split" and self.num_tasks > split_tasks:
            raise options.InvalidOption(
                "num_tasks", f"at most {split_tasks} with the split preset", self.num_tasks
            )
        options.counts("widths", self.widths)
        options.fraction("dropout", self.dropout, low=0.0, high=1.0, closed="low")
        options.fraction("ewc_lambda", self.ewc_lambda, low=0.0, high=math.inf, closed="low")
        options.names("search", tuple(self.search), optimizers.available())
        for name, lrs in self.search.items():  # any number: tests search diverging rates
            if not lrs or not all(_real(lr) for lr in lrs):
                raise options.InvalidOption(
                    "search", f"a non-empty list of learning rates for {name}", lrs
                )
        for name in ("validation_fraction", "held_out_fraction", "drift_alpha", "canary_alpha"):
            options.fraction(name, getattr(self, name), low=0.0, high=1.0)
        if self.validation_fraction + self.held_out_fraction >= 1.0:
            raise options.InvalidOption(
                "held_out_fraction", "< 1 - validation_fraction", self.held_out_fraction
            )
        options.fraction("max_drop", self.max_drop, low=0.0, high=1.0, closed="low,high")
        options.fraction("canary_share", self.canary_share, low=0.0, high=1.0, closed="high")
        if self.canary_min_gain is not None:
            options.fraction(
                "canary_min_gain", self.canary_min_gain, low=0.0, high=1.0, closed="low"
            )
        users = self.num_tasks * self.users_per_task
        for name in ("corrupt_users", "worse_challenger_users"):
            values = getattr(self, name)
            if not all(options.is_integer(u) and 0 <= u < users for u in values):
                raise options.InvalidOption(name, f"users of the stream, 0 to {users - 1}", values)
        options.fraction("slow_user_s", self.slow_user_s, low=0.0, high=math.inf, closed="low")

    @classmethod
    def from_json(cls, path: Path) -> LoopConfig:
        return cls(**json.loads(Path(path).read_text()))


class Loop:
    """The state of a running stream: registry, scenario, deployed model, pending data."""

    def __init__(self, config: LoopConfig, out: Path):
        self.config, self.out = config, Path(out)
        c = config
        arrays = load_arrays(c.dataset, c.data_dir, c.downsample)
        self.stream = Stream(
            arrays,
            make_tasks(c.preset, c.num_tasks, c.seed),
            users_per_task=c.users_per_task,
            batch_size=c.user_batch,
            reference_size=c.reference_size,
            seed=c.seed,
            eval_size=c.eval_size,
        )
        self.reference = self.stream.reference()
        self.num_classes = arrays.num_classes
        x0, y0 = self.stream.eval_set(0)
        self.canary_set = (x0[: c.canary_size], y0[: c.canary_size])
        self.eval_sets = [self.stream.eval_set(t) for t in range(len(self.stream.tasks))]
        self.model = trainer.make_model(
            arrays.x_train.shape[1:], arrays.num_classes, c.widths, c.dropout, c.seed
        )
        self.graphdef = engine.split_model(self.model)[0]
        self.init_weights = trainer.weights_of(self.model)
        self.trigger_config = triggers.TriggerConfig(c.trigger_rules, c.every_n, c.max_drop)
        self.capacity = c.every_n * c.user_batch + c.buffer_size
        self.registry = Registry(self.out)

    # ----------------------------------------------------------------- state on disk
    def _empty_state(self) -> dict:
        shape = self.reference[0].shape[1:]
        empty_x, empty_y = np.zeros((0, *shape), np.float32), np.zeros(0, np.int32)
        buffer = strategies.ReplayBuffer.empty(self.config.buffer_size, shape)
        state = {
            f"{part}_{a}": v
            for part in ("pending", "val", "traffic")
            for a, v in (("x", empty_x), ("y", empty_y))
        }
        state.update(buffer_x=buffer.x, buffer_y=buffer.y, buffer_seen=np.int64(0))
        state.update(ref_x=empty_x, ref_y=empty_y)  # empty: the stream's reference data
        state.update(last_x=empty_x, last_y=empty_y)  # the newest validated batch
        return state

    def _save_state(self, user: int, state: dict, fisher, anchor) -> str:
        arrays = dict(state)
        if fisher is not None:
            arrays.update({f"fisher/{k}": v for k, v in trainer.flatten(fisher).items()})
            arrays.update({f"anchor/{k}": v for k, v in trainer.flatten(anchor).items()})
        name = f"state/after-user-{user}.npz"
        save_npz(self.out / name, arrays)
        return name

    def _load_state(self, name: str):
        arrays = load_npz(self.out / name)
        fisher = {k[7:]: v for k, v in arrays.items() if k.startswith("fisher/")}
        anchor = {k[7:]: v for k, v in arrays.items() if k.startswith("anchor/")}
        state = {k: v for k, v in arrays.items() if "/" not in k}
        if fisher:
            return (
                state,
                trainer.unflatten(self.init_weights.params, fisher),
                trainer.unflatten(self.init_weights.params, anchor),
            )
        return state, None, None

    def load_weights(self, version: int) -> trainer.Weights:
        return trainer.unflatten(self.init_weights, load_npz(self.registry.weights_path(version)))

    # ----------------------------------------------------------------- the first model
    def bootstrap(self) -> None:
        """Search, train, register and deploy v1 on the reference data (one transaction).

        The reference data are split 80/20; the search picks on the 20 %.
        """
        c = self.config
        x, y = self.reference
        k = int(0.8 * len(y))
        best, runs = self._search(
            -1, self.init_weights, x[:k], y[:k], x[k:], y[k:], epochs=c.initial_epochs,
            loss=engine.Classification(),
        )  # fmt: skip
        val_acc, opt_name, hp, m, weights, wall = best
        canary_acc = trainer.accuracy(self.graphdef, weights, *self.canary_set)
        save_npz(self.registry.weights_path(1), trainer.flatten(weights))
        fisher = None
        if c.strategy == "ewc":  # consolidate the reference task before anything new arrives
            fisher = trainer.diagonal_fisher(self.graphdef, weights, x[:k], y[:k])
        state_file = self._save_state(-1, self._empty_state(), fisher, weights.params)
        m = {**m, "canary_set_accuracy": canary_acc}
        with self.registry.transaction() as reg:
            reg.add_model(
                1,
                parent=None,
                user=-1,
                status="deployed",
                optimizer=opt_name,
                hparams=hp,
                metrics=m,
                wall_time_s=wall,
                peak_memory_mb=peak_memory_mb(),
                reason="initial model on the reference data",
            )
            for write in runs:
                _apply(reg, write)
            reg.set_state("checkpoint", {"user": -1, "file": state_file})
            reg.set_state("users_since_retrain", 0)
            reg.set_state("deployed_accuracy", canary_acc)
            reg.set_state("baseline_canary_accuracy", canary_acc)

    def _search(self, u, weights, x, y, val_x, val_y, *, epochs, loss):
        """Optimizer × learning-rate search warm-started from ``weights``: one population
        (``engine.fit_population``, ``vmap`` over the learning rates) per optimizer, a fresh
        optimizer state each, on ``(x, y)`` padded to a bucket of at least ``capacity`` rows
        (one compilation per bucket). The member with the best accuracy on ``(val_x, val_y)``
        is chosen (``tuning.choose``; a diverged member counts as the worst). Returns the
        best member and the run records to write."""
        c, candidates, writes = self.config, [], []
        data = engine.padded({"x": x, "y": y}, minimum=self.capacity)
        config = trainer.train_config(len(y), c.batch_size, epochs)
        for opt_name, lrs in c.search.items():
            start = time.perf_counter()
            result = engine.fit_population(
                lambda key: self.model, trainer.make_tx(opt_name), {"learning_rate": lrs},
                [c.seed * 1000 + u], data, config, loss=loss, warm_start=engine.WarmStart(*weights),
            )  # fmt: skip
            wall = (time.perf_counter() - start) / len(lrs)
            final_losses = result.histories["train_loss"][:, 0, -1]
            members = trainer.members(result)
            for p, (lr, member) in enumerate(zip(lrs, members, strict=True)):
                diverged = bool(result.diverged[p, 0])
                hp = {
                    "learning_rate": lr,
                    "batch_size": config.batch_size,
                    "epochs": epochs,
                    "strategy": c.strategy,
                    "dropout": c.dropout,
                }
                m = {
                    "train_loss": None if diverged else float(final_losses[p]),
                    "val_accuracy": trainer.accuracy(self.graphdef, member, val_x, val_y),
                    "train_samples": len(y),
                    "diverged": diverged,
                }
                writes.append(("add_run", (u, "search", opt_name, hp, m, wall, peak_memory_mb())))
                candidates.append((m["val_accuracy"], opt_name, hp, m, member, wall))
        val = np.array([[np.nan if m["diverged"] else acc] for acc, _, _, m, _, _ in candidates])
        return candidates[tuning.choose(val, maximise=True)], writes

    # ----------------------------------------------------------------- one user
    def process_user(self, u: int) -> dict:
        c, reg = self.config, self.registry
        checkpoint = reg.get_state("checkpoint")
        if checkpoint["user"] != u - 1:
            raise RuntimeError(f"user {u} out of order: last committed is {checkpoint['user']}")
        state, fisher, anchor = self._load_state(checkpoint["file"])
        champion = reg.deployed()
        champ_weights = self.load_weights(champion)
        batch = self.stream.user_batch(u)
        if u in c.corrupt_users:
            batch = corrupt(batch, "nan")
        reference = (state["ref_x"], state["ref_y"]) if len(state["ref_y"]) else self.reference
        report = validation.validate(
            batch.x, batch.y, *reference, num_classes=self.num_classes, alpha=c.drift_alpha
        )
        canary_acc = trainer.accuracy(self.graphdef, champ_weights, *self.canary_set)
        baseline_canary = reg.get_state("baseline_canary_accuracy")
        since = reg.get_state("users_since_retrain")
        deployed_acc = reg.get_state("deployed_accuracy")
        record = {
            "user": u,
            "task": batch.task,
            "task_name": self.stream.tasks[batch.task].name,
            "champion": champion,
            "passed": report.passed,
            "drift": report.drift,
            "min_p_value": report.min_p_value if report.passed else None,
            "stream_accuracy": None,
            "canary_accuracy": canary_acc,
        }
        writes = []  # (method, args) applied in the user's transaction
        if not report.passed:
            q = self.out / "quarantine" / f"user-{u}.npz"
            save_npz(
                q, {"x": batch.x, "y": batch.y, "report": np.array(json.dumps(report.to_dict()))}
            )
            writes += [
                ("ledger_add", (u, "quarantined", len(batch.y))),
                (
                    "add_event",
                    (
                        u,
                        "quarantine",
                        {"failures": report.failures, "file": str(q.relative_to(self.out))},
                    ),
                ),
            ]
            status, trigger = "quarantined", None
        else:
            parts = self._split(u, len(batch.y))
            for name, idx in parts.items():
                state[f"{name}_x"] = np.concatenate([state[f"{name}_x"], batch.x[idx]])
                state[f"{name}_y"] = np.concatenate([state[f"{name}_y"], batch.y[idx]])
            state.update(last_x=batch.x, last_y=batch.y)
            traffic_idx = parts["traffic"]
            record["stream_accuracy"] = trainer.accuracy(
                self.graphdef, champ_weights, batch.x[traffic_idx], batch.y[traffic_idx]
            )
            writes += [
                ("ledger_add", (u, "pending", len(parts["pending"]))),
                ("ledger_add", (u, "held_out", len(parts["val"]) + len(traffic_idx))),
            ]
            since += 1
            trigger = triggers.check(
                self.trigger_config,
                users_since_retrain=since,
                drift=report.drift,
                accuracy=record["stream_accuracy"],
                deployed_accuracy=deployed_acc,
            )
            status = "validated"
        if trigger is None and u == self.stream.num_users - 1 and len(state["pending_y"]):
            trigger = "end_of_stream"
        record["alerts"] = monitoring.alerts(
            quarantined=not report.passed,
            drift=report.drift,
            accuracy=record["stream_accuracy"],
            deployed_accuracy=deployed_acc,
            canary_accuracy=canary_acc,
            baseline_canary_accuracy=baseline_canary,
            max_drop=c.max_drop,
        )
        record["trigger"] = trigger
        deployed_weights = champ_weights
        if trigger is not None:
            outcome = self._retrain(u, trigger, state, champion, champ_weights, fisher, anchor)
            writes += outcome["writes"]
            since = 0
            if outcome["promoted"]:
                deployed_weights, deployed_acc = outcome["weights"], outcome["accuracy"]
                fisher, anchor = outcome["fisher"], outcome["anchor"]
            state = outcome["state"]
            record["canary"] = outcome["decision"]
        record["deployed"] = (
            champion if trigger is None or not outcome["promoted"] else outcome["version"]
        )
        evals = [trainer.accuracy(self.graphdef, deployed_weights, x, y) for x, y in self.eval_sets]
        record["task_accuracy"] = evals
        state_file = self._save_state(u, state, fisher, anchor)
        with reg.transaction():
            reg.add_validation(u, report.to_dict())
            for write in writes:
                _apply(reg, write)
            for t, acc in enumerate(evals):
                reg.add_eval(u, record["deployed"], t, acc)
            for alert in record["alerts"]:
                reg.add_event(u, "alert", {"alert": alert})
            reg.add_event(u, "monitor", record)
            reg.add_user(u, batch.task, len(batch.y), status, record["deployed"])
            reg.set_state("users_since_retrain", since)
            reg.set_state("deployed_accuracy", deployed_acc)
            reg.set_state("checkpoint", {"user": u, "file": state_file})
        old = self.out / checkpoint["file"]
        if old.exists() and old.name != Path(state_file).name:
            old.unlink()
        return record

    def _split(self, u: int, n: int) -> dict[str, np.ndarray]:
        """User ``u``'s ``n`` samples: validation, canary traffic and pending (to train on),
        held out by the project's one split function (seeded per user, not stratified: a
        user's batch may hold a class once)."""
        c = self.config
        seed = int(np.random.SeedSequence([c.seed, 3, u]).generate_state(1)[0])
        n_val, n_traffic = round(c.validation_fraction * n), round(c.held_out_fraction * n)
        rest, val = _hold_out(np.arange(n), n_val, seed)
        pending, traffic = _hold_out(rest, n_traffic, seed)
        return {"val": val, "traffic": traffic, "pending": pending}

    def _retrain(self, u, trigger, state, champion, champ_weights, fisher, anchor) -> dict:
        c, writes = self.config, []
        writes.append(("add_event", (u, "trigger", {"reason": trigger})))
        buffer = strategies.ReplayBuffer(
            state["buffer_x"], state["buffer_y"], int(state["buffer_seen"]), c.buffer_size
        )
        x, y = strategies.training_set(c.strategy, state["pending_x"], state["pending_y"], buffer)
        loss = engine.Classification()
        if c.strategy == "ewc" and fisher is not None:
            loss = engine.ElasticWeightConsolidation(fisher, anchor, np.float32(c.ewc_lambda))
        best, runs = self._search(
            u, champ_weights, x, y, state["val_x"], state["val_y"], epochs=c.epochs, loss=loss
        )
        writes += runs
        val_acc, opt_name, hp, m, weights, wall = best
        if u in c.worse_challenger_users:  # fault injection: a deliberately broken challenger
            weights = trainer.weights_of(
                trainer.make_model(
                    self.reference[0].shape[1:], self.num_classes, c.widths, c.dropout,
                    seed=c.seed + 999,
                )
            )  # fmt: skip
            hp = {**hp, "fault": "random weights"}
        # canary: pending users' held-out traffic plus as many requests from the canary set
        k = min(len(state["traffic_y"]), len(self.canary_set[1]))
        tx = np.concatenate([state["traffic_x"], self.canary_set[0][:k]])
        ty = np.concatenate([state["traffic_y"], self.canary_set[1][:k]])
        routed = canary.route(len(ty), c.canary_share, seed=c.seed * 1000 + u)
        champ_ok = trainer.predict(self.graphdef, champ_weights, tx[routed]) == ty[routed]
        chall_ok = trainer.predict(self.graphdef, weights, tx[routed]) == ty[routed]
        decision = canary.decide(
            champ_ok, chall_ok, alpha=c.canary_alpha, min_gain=c.canary_min_gain
        )
        version = self.registry.next_version()
        save_npz(self.registry.weights_path(version), trainer.flatten(weights))
        m = {
            **m,
            "canary": decision.to_dict(),
            "canary_set_accuracy": trainer.accuracy(self.graphdef, weights, *self.canary_set),
        }
        status = "deployed" if decision.promote else "rolled_back"
        writes.append(
            (
                "add_model",
                (version,),
                dict(
                    parent=champion,
                    user=u,
                    status="candidate",
                    optimizer=opt_name,
                    hparams=hp,
                    metrics=m,
                    wall_time_s=wall,
                    peak_memory_mb=peak_memory_mb(),
                    reason=f"trigger: {trigger}",
                ),
            )
        )
        writes.append(("add_run", (u, "final", opt_name, hp, m, wall, peak_memory_mb())))
        if decision.promote:
            writes.append(("set_status", (champion, "retired", f"replaced by v{version}")))
        writes.append(("set_status", (version, status, decision.reason)))
        writes.append(("add_event", (u, "canary", {"version": version, **decision.to_dict()})))
        writes.append(("ledger_move", ("pending", "trained")))
        # strategy state: the buffer takes the consumed data; EWC consolidates on promotion
        rng = np.random.default_rng([c.seed, 4, u])
        buffer = buffer.add(state["pending_x"], state["pending_y"], rng)
        new_state = self._empty_state()
        new_state.update(buffer_x=buffer.x, buffer_y=buffer.y, buffer_seen=np.int64(buffer.seen))
        # drift is measured against the newest batch the deployed model has learned
        new_state.update(last_x=state["last_x"], last_y=state["last_y"])
        promoted_ref = decision.promote and len(state["last_y"]) >= c.min_reference
        ref = "last" if promoted_ref else "ref"
        new_state.update(ref_x=state[f"{ref}_x"], ref_y=state[f"{ref}_y"])
        new_fisher, new_anchor = fisher, anchor
        if decision.promote and c.strategy == "ewc":
            f_new = trainer.diagonal_fisher(
                self.graphdef, weights, state["pending_x"], state["pending_y"]
            )
            new_fisher = f_new if fisher is None else tree_add(fisher, f_new)
            new_anchor = weights.params
        return {
            "writes": writes,
            "promoted": decision.promote,
            "weights": weights,
            "accuracy": trainer.accuracy(
                self.graphdef, weights, state["traffic_x"], state["traffic_y"]
            ),
            "fisher": new_fisher,
            "anchor": new_anchor,
            "state": new_state,
            "decision": decision.to_dict(),
            "version": version,
        }


def tree_add(a, b):
    return jax.tree.map(np.add, a, b)


def _apply(reg: Registry, write) -> None:
    method, args, *kwargs = write
    getattr(reg, method)(*args, **(kwargs[0] if kwargs else {}))


# --------------------------------------------------------------------------- running


def run_stream(config: LoopConfig, out: str | Path, resume: bool = False, log=print) -> dict:
    """Run (or resume) the loop over the whole stream; returns the report's numbers."""
    out = Path(out)
    config_path = out / "config.json"
    if resume:
        if not config_path.exists():
            raise OSError(f"--resume: no run to resume in {out} (config.json missing)")
        config = LoopConfig.from_json(config_path)
        check_resumable(out, config)
    elif (out / "registry.sqlite").exists():
        raise OSError(f"{out} already holds a run; pass --resume or choose another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(config_path, json.dumps(dataclasses.asdict(config), indent=2))
    loop = Loop(config, out)
    try:
        if loop.registry.get_state("checkpoint") is None:
            loop.bootstrap()
        start = loop.registry.get_state("checkpoint")["user"] + 1
        if resume:
            log(f"resuming at user {start} of {loop.stream.num_users}")
        users = tqdm(range(start, loop.stream.num_users), desc="continual", unit="user",
                     initial=start, total=loop.stream.num_users, file=sys.stderr)  # fmt: skip
        for u in users:
            rec = loop.process_user(u)
            canary_note = ""
            if "canary" in rec:
                d = rec["canary"]
                canary_note = f" → {'promoted' if d['promote'] else 'rolled back'} ({d['reason']})"
            log(
                f"user {u:3d} [{rec['task_name']}] "
                f"{'ok' if rec['passed'] else 'QUARANTINED'}"
                f"{' drift' if rec['drift'] else ''} canary={rec['canary_accuracy']:.3f}"
                f"{' retrain: ' + rec['trigger'] if rec['trigger'] else ''}{canary_note}"
            )
            if config.slow_user_s:
                time.sleep(config.slow_user_s)
        return write_report(loop)
    finally:
        loop.registry.close()


def _numbered(folder: Path, pattern: str) -> list[int]:
    """The numbers ``n`` of the files in ``folder`` named ``pattern % n`` (a regex), sorted."""
    found = (re.fullmatch(pattern, p.name) for p in folder.glob("*")) if folder.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def check_resumable(out: Path, config: LoopConfig) -> None:
    """Refuse to resume from a damaged registry instead of silently starting over.

    The files beside the registry tell how far the run got: ``state/after-user-{u}.npz`` (the
    committed user ``c``, and ``c + 1`` if killed before its commit) and ``models/v{k}.npz``
    (every version ``1..V``, and ``V + 1`` if killed before its commit). A registry that is
    missing, empty, unreadable (SQLite ``quick_check``) or inconsistent with them raises
    :class:`~.registry.RegistryDamagedError`; so does a checkpoint at user ``c`` whose tables
    do not hold users ``0..c``, ``user_batch`` ledger samples for each, one validation report,
    monitor event and ``num_tasks`` evaluations per user, and model versions ``1..V`` with
    one deployed. Only a run that committed nothing (no file past the first model) restarts.
    """
    states = _numbered(out / "state", r"after-user-(-?\d+)\.npz")
    versions = _numbered(out / "models", r"v(\d+)\.npz")
    db = out / "registry.sqlite"
    nothing_committed = max(states, default=-1) <= -1 and max(versions, default=1) <= 1
    if nothing_committed and (not db.is_file() or db.stat().st_size == 0):
        return  # killed before its first commit: starting over loses nothing
    try:
        reg = Registry.open_existing(out)
        try:
            problem = _resume_problem(reg, config, states, versions)
        finally:
            reg.close()
        if problem:
            raise RegistryDamagedError(f"{db}: {problem}")
    except RegistryDamagedError as err:
        raise RegistryDamagedError(f"{err}; the run cannot be resumed from {out}") from None


def _resume_problem(reg: Registry, config: LoopConfig, states, versions) -> str | None:
    """What the registry lacks that the run's files imply (see :func:`check_resumable`)."""
    rows = reg.row_counts()
    checkpoint = reg.get_state("checkpoint")
    if checkpoint is None:
        if any(rows.values()) or max(states, default=-1) > -1 or max(versions, default=1) > 1:
            return "no committed checkpoint, though rows or later state/model files exist"
        return None
    c = checkpoint["user"]
    if not (reg.root / checkpoint["file"]).is_file():
        return f"its checkpoint file {checkpoint['file']} is missing"
    if max(states) > c + 1:
        return f"checkpoint at user {c}, but state/after-user-{max(states)}.npz exists"
    if reg.processed_users() != list(range(c + 1)):
        return f"checkpoint at user {c}, but {rows['users']} users are recorded (expected {c + 1})"
    ledger = reg.ledger_by_user()
    if ledger != dict.fromkeys(range(c + 1), config.user_batch):
        return (
            f"its ledger accounts for {sum(ledger.values())} samples, "
            f"expected {(c + 1) * config.user_batch} (users 0..{c} × {config.user_batch})"
        )
    for table, per_user in (("validation", 1), ("evals", config.num_tasks)):
        if rows[table] != (c + 1) * per_user:
            return f"{rows[table]} {table} rows, expected {(c + 1) * per_user}"
    if len(reg.events("monitor")) != c + 1:
        return f"{len(reg.events('monitor'))} monitor events, expected {c + 1}"
    models = [m["version"] for m in reg.models()]
    if not models or models != list(range(1, len(models) + 1)):
        return f"model versions {models}, expected 1..V"
    if not set(models) <= set(versions) or max(versions) > len(models) + 1:
        return f"model rows v1..v{len(models)} do not match the weight files {versions}"
    if sum(m["status"] == "deployed" for m in reg.models()) != 1:
        return "not exactly one deployed model"
    for key in ("users_since_retrain", "deployed_accuracy", "baseline_canary_accuracy"):
        if reg.get_state(key) is None:
            return f"its state lacks {key!r}"
    return None


def accuracy_matrix(loop: Loop) -> np.ndarray:
    """R[j, i]: deployed model's accuracy on task i at the last user of task j."""
    T = len(loop.stream.tasks)
    acc = {(u, t): a for u, _, t, a in loop.registry.evals()}
    R = np.full((T, T), np.nan)
    for j in range(T):
        last = (j + 1) * loop.stream.users_per_task - 1
        for i in range(T):
            R[j, i] = acc.get((last, i), np.nan)
    return R


def write_report(loop: Loop) -> dict:
    """metrics.jsonl, summary.md and plots from the registry (the single source of truth)."""
    reg, out, stream = loop.registry, loop.out, loop.stream
    users = reg.processed_users()
    if users != list(range(stream.num_users)):
        raise RuntimeError(f"users processed {users} != 0..{stream.num_users - 1}")
    arrived = stream.num_users * stream.batch_size
    totals = reg.ledger_totals()
    accounted = sum(totals.get(k, 0) for k in ("trained", "held_out", "quarantined"))
    if totals.get("pending", 0) or accounted != arrived:  # every sample accounted for
        raise RuntimeError(f"ledger {totals} does not add up to {arrived} arrived")
    records = reg.events("monitor")
    canaries = reg.events("canary")
    models = reg.models()
    R = accuracy_matrix(loop)
    summary = metrics.summarize(R)
    with open(out / "metrics.jsonl", "w") as f:
        for rec in records:
            opt_name = _optimizer_of(models, rec["deployed"])
            f.write(json.dumps({**rec, "kind": "user", "optimizer": opt_name}) + "\n")
        for run in reg.runs():  # every search trial: optimizer, hyperparameters, metrics
            f.write(json.dumps({**run, "kind": "run"}) + "\n")
        for mdl in models:
            f.write(json.dumps({**mdl, "kind": "model"}) + "\n")
        f.write(json.dumps({"kind": "summary", **summary, "ledger": totals}) + "\n")
    names = [t.name for t in stream.tasks]
    monitoring.plot_timeline(records, reg.events(), out / "timeline.png")
    monitoring.plot_accuracy_matrix(R, names, out / "accuracy_matrix.png", "deployed model R[j, i]")
    _write_summary(loop, R, summary, totals, arrived, models, canaries)
    return {
        "ledger": totals,
        "arrived": arrived,
        "metrics": summary,
        "R": R.tolist(),
        "promoted": sum(c["promote"] for c in canaries),
        "rolled_back": sum(not c["promote"] for c in canaries),
    }


def _optimizer_of(models: list[dict], version: int) -> str:
    return next((m["optimizer"] for m in models if m["version"] == version), "")


def _write_summary(loop, R, summary, totals, arrived, models, canaries) -> None:
    reg, c = loop.registry, loop.config
    lines = [
        f"# Continual loop: {c.dataset} / {c.preset}, strategy {c.strategy}",
        "",
        f"{loop.stream.num_users} users × {c.user_batch} samples over {c.num_tasks} tasks; "
        f"triggers {', '.join(c.trigger_rules)} (every {c.every_n}); canary share "
        f"{c.canary_share}, McNemar alpha {c.canary_alpha}.",
        "",
        f"Machine (writing this report): {describe_machine(machine())}.",
        "",
        "## Sample ledger",
        "",
        "| arrived | trained | held out | quarantined | pending |",
        "|---:|---:|---:|---:|---:|",
        f"| {arrived} | {totals.get('trained', 0)} | {totals.get('held_out', 0)} | "
        f"{totals.get('quarantined', 0)} | {totals.get('pending', 0)} |",
        "",
        "trained + held out + quarantined = arrived ✔",
        "",
        "## Model versions",
        "",
        "| version | parent | user | status | optimizer | lr | val acc | canary-set acc | reason |",
        "|---:|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for m in models:
        met = m["metrics"]
        lines.append(
            f"| v{m['version']} | {m['parent'] or ''} | {m['user']} | {m['status']} | "
            f"{m['optimizer']} | {m['hparams'].get('learning_rate', '')} | "
            f"{met.get('val_accuracy', float('nan')):.3f} | "
            f"{met.get('canary_set_accuracy', met.get('canary_accuracy', float('nan'))):.3f} | "
            f"{m['reason']} |"
        )
    lines += ["", "## Retrain triggers and canary decisions", ""]
    trig = {e["user"]: e["reason"] for e in reg.events("trigger")}
    for d in canaries:
        verdict = "promoted" if d["promote"] else "rolled back"
        lines.append(
            f"- user {d['user']}: trigger *{trig.get(d['user'])}* → v{d['version']} "
            f"{verdict}: {d['reason']} (champion {d['champion_accuracy']:.3f}, "
            f"challenger {d['challenger_accuracy']:.3f} on {d['requests']} requests)"
        )
    quarantined = reg.validation_reports(failed_only=True)
    lines += ["", "## Quarantined batches", ""]
    lines += [f"- user {u}: {'; '.join(r['failures'])}" for u, r in quarantined.items()] or ["none"]
    alerts = reg.events("alert")
    lines += ["", "## Alerts", ""]
    lines += [f"- user {a['user']}: {a['alert']}" for a in alerts] or ["none"]
    names = [t.name for t in loop.stream.tasks]
    lines += [
        "",
        "## Accuracy matrix R[j, i] of the deployed model",
        "",
        "| after \\ on | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for j, row in enumerate(R):
        lines.append(f"| {names[j]} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    lines += [
        "",
        f"Average accuracy {summary['average_accuracy']:.3f}, backward transfer "
        f"{summary['backward_transfer']:+.3f}, forgetting {summary['forgetting']:.3f} "
        "(definitions: Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018).",
        "",
        "Plots: `timeline.png` (canary and prequential accuracy, drift p-values, decisions), "
        "`accuracy_matrix.png`.",
    ]
    atomic_write_text(loop.out / "summary.md", "\n".join(lines) + "\n")
