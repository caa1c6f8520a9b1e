"""The `knowtune` command: one sub-command per stage of the data flow; importing this package registers them all."""

# isort: off
# Importing a command module registers its commands, in this order in `knowtune --help`: the data flow.
from knowtune.cli import probing, training, evaluation, data, study  # noqa: F401
# isort: on
from knowtune.cli.app import _kept, _state, app, main
from knowtune.cli.evaluation import evaluate, probe_mc
from knowtune.cli.training import update

__all__ = ["_kept", "_state", "app", "evaluate", "main", "probe_mc", "update"]
