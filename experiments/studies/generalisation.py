"""Do adaptive methods generalise worse than SGD with momentum (Wilson et al., NeurIPS 2017)?

On MNIST and Fashion-MNIST every optimizer trains the same model from the same
initialisations; its learning rate is chosen from a log grid (±1 decade around the registry's
suggestion; rates × seeds in one ``engine.fit_population``) by the seed-mean final accuracy on
a validation split held out from the training set: the test set is looked at only for the
report. At the chosen rate, mean ± std over seeds:

    gap_acc = acc_train − acc_test,    gap_loss = L_test − L_train

(training metrics from a full pass in eval mode). The answer sets the best SGD-with-momentum
method (heavy ball or Nesterov) against the best adaptive one (Adagrad, RMSProp, Adam, ...) by
test accuracy and by gap, calling a difference real only beyond the seed spread
(|Δmean| > std₁ + std₂).

Sizes: ``--quick`` takes 2000-example subsets of each training set (1600 train / 400
validation) and 1000 test images, an MLP 784-128-10, momentum/rmsprop/adam, 10 epochs, 3
rates, 3 seeds (about 35 s on 2 CPU cores). The full study uses the whole sets (54 000 / 6 000
/ 10 000), the DeepOBS CNN ``cnn_2c2d``, momentum, nesterov, adagrad, rmsprop and adam, 30
epochs, batch 128, 5 rates, 3 seeds (expected on one GPU: about 30 minutes, estimate).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from optlab import models
from optlab.experiments import engine, report, tuning
from optlab.experiments.studies import _common as common

STUDY = "generalisation"

SIZES = {
    "test": dict(
        datasets=("mnist",), model="mlp", model_options=dict(widths=(32,)),
        optimizers=("momentum", "adam"), num_train=600, num_test=300, validation=0.2,
        epochs=3, batch_size=50, num_rates=2, decades=0.5, seeds=2,
    ),
    "quick": dict(
        datasets=("mnist", "fashion_mnist"), model="mlp", model_options=dict(widths=(128,)),
        optimizers=("momentum", "rmsprop", "adam"), num_train=2000, num_test=1000,
        validation=0.2, epochs=10, batch_size=64, num_rates=3, decades=1.0, seeds=3,
    ),
    "cpu": dict(
        datasets=("mnist", "fashion_mnist"), model="mlp", model_options=dict(widths=(128,)),
        optimizers=("momentum", "nesterov", "rmsprop", "adam"), num_train=10000, num_test=5000,
        validation=0.2, epochs=15, batch_size=64, num_rates=3, decades=1.0, seeds=3,
    ),
    "full": dict(
        datasets=("mnist", "fashion_mnist"), model="cnn_2c2d", model_options={},
        optimizers=("momentum", "nesterov", "adagrad", "rmsprop", "adam"), num_train=None,
        num_test=None, validation=0.1, epochs=30, batch_size=128, num_rates=5, decades=1.0,
        seeds=3,
    ),
}  # fmt: skip


def outcome(tuned: tuning.Tuned) -> dict:
    """Per-seed numbers at the chosen rate."""
    train_acc, test_acc = tuned.final("train_accuracy"), tuned.final("test_accuracy")
    return dict(
        rate=tuned.chosen["learning_rate"],
        train_loss=tuned.final("train_loss"),
        train_accuracy=train_acc,
        val_accuracy=tuned.final("val_accuracy"),
        test_accuracy=test_acc,
        test_loss=tuned.final("test_loss"),
        gap_accuracy=train_acc - test_acc,
        gap_loss=tuned.final("test_loss") - tuned.final("train_loss"),
        train_curve=tuned.curves("train_loss"),
        test_curve=tuned.curves("test_loss"),
        test_accuracy_curve=tuned.curves("test_accuracy"),
    )


def compare_on_task(
    task: str, make_model, splits, config, names, cfg, seed_ids, metrics, **fields
) -> dict[str, dict]:
    """Tune every optimizer on ``splits`` (by validation accuracy); log and return outcomes."""
    results = {}
    for name in names:
        rates = tuning.suggested_rates(name, cfg["num_rates"], cfg["decades"])
        tuned = tuning.tune_rates(
            name, make_model, rates, seed_ids, splits, config, select="val_accuracy"
        )
        for record in tuning.records(tuned, study=cfg["study"], task=task, **fields):
            record["final_loss"] = record["train_loss"]
            metrics.write(record)
        results[name] = outcome(tuned)
    return results


def family_verdict(results: dict[str, dict], task: str) -> str:
    """One task's sentence: best SGD-momentum method vs best adaptive method."""
    sgd = [n for n in results if n in common.SGD_FAMILY]
    adaptive = [n for n in results if n in common.ADAPTIVE_FAMILY]
    if not sgd or not adaptive:
        return f"{task}: needs an SGD-family and an adaptive optimizer to compare."

    def best(group):
        return max(group, key=lambda n: np.nan_to_num(results[n]["test_accuracy"].mean(), nan=-1))

    s, a = best(sgd), best(adaptive)
    rs, ra = results[s], results[a]
    acc_diff = 100 * (rs["test_accuracy"].mean() - ra["test_accuracy"].mean())
    gap_diff = 100 * (rs["gap_accuracy"].mean() - ra["gap_accuracy"].mean())
    acc_real = common.spread_differs(rs["test_accuracy"], ra["test_accuracy"])
    gap_real = common.spread_differs(rs["gap_accuracy"], ra["gap_accuracy"])
    if acc_real and acc_diff > 0:
        verdict = "yes, SGD with momentum tests better"
    elif acc_real and acc_diff < 0:
        verdict = "no, the adaptive method tests better"
    else:
        verdict = "no measurable difference in test accuracy"
    return (
        f"{task}: {verdict} — best SGD-momentum {s} {common.mean_std_pct(rs['test_accuracy'])} "
        f"% vs best adaptive {a} {common.mean_std_pct(ra['test_accuracy'])} % test accuracy "
        f"({acc_diff:+.2f} pp, {'beyond' if acc_real else 'within'} the seed spread); "
        f"train−test accuracy gap {common.mean_std_pct(rs['gap_accuracy'])} vs "
        f"{common.mean_std_pct(ra['gap_accuracy'])} pp: {s}'s gap is "
        f"{'larger' if gap_diff > 0 else 'smaller'} by {abs(gap_diff):.2f} pp, "
        f"{'beyond' if gap_real else 'within'} the seed spread."
    )


def answer(by_task: dict[str, dict[str, dict]], question: str) -> str:
    sentences = [family_verdict(results, task) for task, results in by_task.items()]
    return f"{question} " + " ".join(sentences)


def result_rows(by_task: dict[str, dict[str, dict]]) -> list[list[str]]:
    return [
        [task, n, f"{r['rate']:.3g}", common.mean_std(r["train_loss"]),
         common.mean_std_pct(r["train_accuracy"]), common.mean_std_pct(r["val_accuracy"]),
         common.mean_std_pct(r["test_accuracy"]), common.mean_std_pct(r["gap_accuracy"]),
         common.mean_std(r["gap_loss"])]
        for task, results in by_task.items() for n, r in results.items()
    ]  # fmt: skip


RESULT_HEADERS = ["task", "optimizer", "η", "train loss", "train acc %", "val acc %",
                  "test acc %", "gap acc (pp)", "gap loss"]  # fmt: skip


def plot_tasks(run_dir, by_task: dict[str, dict[str, dict]], prefix: str = "") -> list[str]:
    """Training/test loss curves and test accuracy per task; returns the PNG names."""
    loss_panels, acc_panels = {}, {}
    for task, results in by_task.items():
        loss_panels[task] = {}
        acc_panels[task] = {}
        for n, r in results.items():
            epochs = np.arange(1, r["train_curve"].shape[-1] + 1)
            loss_panels[task][f"{n} train"] = (
                epochs,
                r["train_curve"].mean(0),
                r["train_curve"].std(0),
            )
            loss_panels[task][f"{n} test"] = (
                epochs,
                r["test_curve"].mean(0),
                r["test_curve"].std(0),
            )
            acc = 100 * r["test_accuracy_curve"]
            acc_panels[task][n] = (epochs, acc.mean(0), acc.std(0))
    names = [f"{prefix}loss_curves.png", f"{prefix}test_accuracy.png"]
    report.plot_panels(
        run_dir / names[0], loss_panels, xlabel="epoch", ylabel="loss", logy=True,
        suptitle="training and test loss at the tuned rate (mean ± std over seeds)",
    )  # fmt: skip
    report.plot_panels(
        run_dir / names[1], acc_panels, xlabel="epoch", ylabel="test accuracy %",
        suptitle="test accuracy at the tuned rate (mean ± std over seeds)",
    )  # fmt: skip
    return names


def run(
    out=None,
    quick: bool = False,
    seeds: int | None = None,
    size: str | None = None,
    optimizers: Sequence[str] = (),
) -> dict:
    """Run the study and write the run folder; ``size`` (test, quick, cpu, full) overrides
    ``quick``; ``optimizers`` are added to the study's own set."""
    started = time.perf_counter()
    size_name, cfg = common.pick_size(SIZES, size, quick, optimizers)
    cfg["study"] = STUDY
    seed_ids = common.seed_list(seeds, cfg["seeds"])
    config = engine.TrainConfig(epochs=cfg["epochs"], batch_size=cfg["batch_size"], eval_train=True)
    run_dir = report.make_run_dir(out, f"study-{STUDY}")
    task_splits = {
        name: common.load_splits(
            name,
            validation=cfg["validation"],
            num_train=cfg["num_train"],
            num_test=cfg["num_test"],
        )  # fmt: skip
        for name in cfg["datasets"]
    }
    report.write_config(
        run_dir,
        dict(**cfg, quick=quick, size=size_name, seed_ids=seed_ids, train=config,
             data={k: s.sizes() for k, s in task_splits.items()},
             machine=report.machine()),
    )  # fmt: skip
    by_task = {}
    with report.MetricsWriter(run_dir) as metrics:
        for task, splits in task_splits.items():

            def make_model(key, splits=splits):
                return models.build(
                    cfg["model"], splits.input_shape, splits.num_classes, seed=key,
                    **cfg["model_options"],
                )  # fmt: skip

            by_task[task] = compare_on_task(
                task, make_model, splits, config, cfg["optimizers"], cfg, seed_ids, metrics,
                dataset=task, model=cfg["model"],
            )  # fmt: skip
    pngs = plot_tasks(run_dir, by_task)
    text = answer(by_task, "Does SGD with momentum generalise better than adaptive methods here?")
    sizes = ", ".join(f"{k} {s.sizes()}" for k, s in task_splits.items())
    sections = [
        f"{sizes}; model {cfg['model']} {cfg['model_options']}, {cfg['epochs']} epochs, batch "
        f"{cfg['batch_size']}, {cfg['num_rates']} rates per optimizer (±{cfg['decades']:g} "
        "decades around the registry's suggestion) chosen by final validation accuracy "
        f"(validation split of the training set, never the test set), seeds {seed_ids}.",
        "## Does SGD with momentum generalise better?",
        text,
        "## Results at the tuned learning rate",
        report.markdown_table(RESULT_HEADERS, result_rows(by_task)),
        "\n".join(f"![{png}]({png})" for png in pngs),
        f"Hardware: {report.describe_machine(report.machine())}. "
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: generalisation of adaptive methods vs SGD", sections)
    print(text)
    return dict(folder=run_dir, results=by_task, answer=text)
