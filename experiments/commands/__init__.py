"""The command line's options, one light module per subcommand.

``optlab COMMAND --help`` and a mistyped option must answer at once, so these modules
import nothing heavy (no JAX, Flax, Optax, Matplotlib): each defines the subcommand's
``configure_parser(parser)`` and a ``run(args)`` that imports the program itself only
when the command runs (tests/experiments/test_cli_speed.py checks both).
"""

TRACK_HELP = (
    "log the run to MLflow (a SQLite store in the run folder; MLFLOW_TRACKING_URI chooses "
    "another); needs pip install 'optlab[tracking]'"
)
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")  # data.available(), tested equal
