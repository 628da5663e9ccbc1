"""The optimizer comparison beyond MLPs: VGG16, LSTM/GRU on sequential MNIST, a Transformer.

Tasks:

* ``vgg16``: VGG16 (13 conv layers, the small-image classifier; BatchNorm at full size) on
  CIFAR-10 when its files are present, else on Fashion-MNIST (the summary names the dataset used);
* ``lstm`` / ``gru``: a recurrent classifier reading MNIST row by row, 28 steps of 28 pixels
  (sequential MNIST by rows), classifying from the last hidden state;
* ``transformer``: a ViT-style encoder on MNIST patches (mean-pooled tokens).

The protocol is the generalisation study's (:mod:`experiments.studies.generalisation`): per
task and optimizer, a log grid of learning rates × seeds in one ``engine.fit_population``,
the rate chosen by final validation accuracy (a split of the training set), then test
accuracy, training loss and the train–test gap at that rate, mean ± std over seeds; the answer
sets the best SGD-with-momentum method against the best adaptive one per architecture.

Sizes: ``--quick`` shrinks everything for 2 CPU cores and leaves GRU out (``--size cpu`` and
the full size run it): 800-example MNIST training subsets (640 train / 160 validation; 320
Fashion-MNIST examples for VGG16), 256 test images, VGG16
with stage widths 4-8-8-16-16, a 16-wide head and no BatchNorm (configuration D as
published; BatchNorm triples the CPU compile time), LSTM/GRU with 32 hidden units, a 1-block
Transformer (dim 16, 2 heads, 7×7 patches), momentum vs adam, 2 epochs of batch 16, 2
rates, 2 seeds (about 45 s of CPU time, nearly all XLA compilation of the 6 populations).
The full study uses the whole sets (10 % validation), the models' default sizes
(VGG16 64…512, LSTM/GRU 128, Transformer dim 64, depth 2, 4×4 patches), momentum, nesterov,
adagrad, rmsprop and adam, 20 epochs, batch 128, 3 rates, 3 seeds (expected on one GPU:
about 1.5–2 hours, estimate; VGG16 is most of it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from optlab import models
from optlab.experiments import data, engine, report
from optlab.experiments.studies import _common as common
from optlab.experiments.studies import generalisation

STUDY = "architectures"
# task -> (model name, dataset); "image" is CIFAR-10 when present, else Fashion-MNIST
TASKS = {
    "vgg16": ("vgg16", "image"),
    "lstm": ("lstm", "mnist"),
    "gru": ("gru", "mnist"),
    "transformer": ("transformer", "mnist"),
}
TINY = {
    "vgg16": dict(widths=(4, 8, 8, 16, 16), head_width=16, batch_norm=False),
    "lstm": dict(hidden=32),
    "gru": dict(hidden=32),
    "transformer": dict(patch_size=7, dim=16, depth=1, num_heads=2),
}
SMALL = {
    "vgg16": dict(widths=(8, 16, 16, 32, 32), head_width=32, batch_norm=False),
    "lstm": dict(hidden=64),
    "gru": dict(hidden=64),
    "transformer": dict(patch_size=7, dim=32, depth=1, num_heads=2),
}
DEFAULT = {"vgg16": {}, "lstm": dict(hidden=128), "gru": dict(hidden=128), "transformer": {}}

SIZES = {
    "test": dict(
        tasks=("gru",), model_options=TINY, optimizers=("momentum", "adam"),
        num_train=320, num_test=128, image_num_train=320, validation=0.2, epochs=1,
        batch_size=32, num_rates=1, decades=0.0, seeds=2,
    ),
    "quick": dict(
        tasks=("vgg16", "lstm", "transformer"), model_options=TINY,
        optimizers=("momentum", "adam"), num_train=800, num_test=256, image_num_train=320,
        validation=0.2, epochs=2, batch_size=16, num_rates=2, decades=0.5, seeds=2,
    ),
    "cpu": dict(
        tasks=tuple(TASKS), model_options=SMALL, optimizers=("momentum", "adam"),
        num_train=3000, num_test=1000, image_num_train=1000, validation=0.2, epochs=5,
        batch_size=32, num_rates=3, decades=1.0, seeds=2,
    ),
    "full": dict(
        tasks=tuple(TASKS), model_options=DEFAULT,
        optimizers=("momentum", "nesterov", "adagrad", "rmsprop", "adam"), num_train=None,
        num_test=None, image_num_train=None, validation=0.1, epochs=20, batch_size=128,
        num_rates=3, decades=0.5, seeds=3,
    ),
}  # fmt: skip


def image_dataset() -> str:
    """``cifar10`` when its files are already here (no download attempted), else
    ``fashion_mnist``, the stated substitute."""
    try:
        data.load("cifar10", download=False)
    except data.DataError:
        return "fashion_mnist"
    return "cifar10"


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
    datasets = {}
    plan = {}
    for task in cfg["tasks"]:
        model_name, kind = TASKS[task]
        dataset = image_dataset() if kind == "image" else kind
        if dataset not in datasets:
            num_train = cfg["image_num_train"] if kind == "image" else cfg["num_train"]
            datasets[dataset] = common.load_splits(
                dataset, validation=cfg["validation"], num_train=num_train,
                num_test=cfg["num_test"],
            )  # fmt: skip
        plan[task] = (model_name, dataset, cfg["model_options"][task])
    run_dir = report.make_run_dir(out, f"study-{STUDY}")
    report.write_config(
        run_dir,
        dict(**cfg, quick=quick, size=size_name, seed_ids=seed_ids, train=config,
             plan={t: dict(model=m, dataset=d, options=o) for t, (m, d, o) in plan.items()},
             data={k: s.sizes() for k, s in datasets.items()}, machine=report.machine()),
    )  # fmt: skip
    by_task, labels = {}, {}
    with report.MetricsWriter(run_dir) as metrics:
        for task, (model_name, dataset, options) in plan.items():
            splits = datasets[dataset]

            def make_model(key, splits=splits, model_name=model_name, options=options):
                return models.build(
                    model_name, splits.input_shape, splits.num_classes, seed=key, **options
                )

            params = models.count_params(make_model(0))
            label = f"{task} on {dataset} ({params:,} params)"
            labels[task] = label
            by_task[label] = generalisation.compare_on_task(
                task, make_model, splits, config, cfg["optimizers"], cfg, seed_ids, metrics,
                model=model_name, dataset=dataset, params=params,
            )  # fmt: skip
    pngs = generalisation.plot_tasks(run_dir, by_task)
    text = generalisation.answer(
        by_task, "Does the SGD-momentum vs adaptive comparison change with the architecture?"
    )
    winners = {
        label: max(results, key=lambda n: results[n]["test_accuracy"].mean())
        for label, results in by_task.items()
    }
    text += (
        " Best test accuracy per architecture: "
        + "; ".join(f"{label.split(' (')[0]}: {name}" for label, name in winners.items())
        + "."
    )
    sections = [
        ", ".join(f"{k} {s.sizes()}" for k, s in datasets.items())
        + f"; {cfg['epochs']} epochs, batch {cfg['batch_size']}, {cfg['num_rates']} rates per "
        f"optimizer (±{cfg['decades']:g} decades around the registry's suggestion) chosen by "
        f"final validation accuracy, seeds {seed_ids}. Models: "
        + "; ".join(f"{t}: {m} {o}" for t, (m, _, o) in plan.items())
        + ". Sequential MNIST: 28 steps of one 28-pixel row each.",
        "## Does the comparison depend on the architecture?",
        text,
        "## Results at the tuned learning rate",
        report.markdown_table(generalisation.RESULT_HEADERS, generalisation.result_rows(by_task)),
        "\n".join(f"![{png}]({png})" for png in pngs),
        f"Hardware: {report.describe_machine(report.machine())}. "
        f"Run time: {time.perf_counter() - started:.1f} s.",
    ]
    report.write_summary(run_dir, "Study: optimizers across architectures", sections)
    print(text)
    return dict(folder=run_dir, results=by_task, labels=labels, answer=text)
