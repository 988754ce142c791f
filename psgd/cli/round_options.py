"""The options of round-based federated jobs, shared by ``psgd-submit`` and ``psgd submit``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["round_options"]


def round_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --rounds, --local-epochs, --target-accuracy, --eval... to a click command."""
    options = [
        click.option(
            "--rounds",
            type=click.IntRange(min=1),
            default=None,
            help="Round-based federated jobs (e.g. --codec federated.FedAvgClient): rounds to "
            "run; a round is the server's aggregation step [default: 10].",
        ),
        click.option(
            "--local-epochs",
            "local_epochs",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Local epochs E a picked client trains per round (E * n_k / B steps) "
            "[default: the codec's, one epoch for the federated codecs].",
        ),
        click.option(
            "--target-accuracy",
            "target_accuracy",
            type=click.FloatRange(min=0, max=1, min_open=True),
            default=None,
            help="Stop at the first evaluated round at or above this accuracy; "
            "summary.json records which round.",
        ),
        click.option(
            "--eval",
            "eval",
            type=click.Choice(["auto", "global", "clients"]),
            default="auto",
            show_default=True,
            help="Round jobs: 'global' evaluates the server's model on the test set each "
            "round (auto does); 'clients' evaluates every client's own model on its held-out "
            "split and reports mean, 10th percentile and worst client accuracy.",
        ),
        click.option(
            "--eval-every",
            "eval_every",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Evaluate every N rounds (and the last).",
        ),
        click.option(
            "--client-test-fraction",
            "client_test_fraction",
            type=click.FloatRange(min=0, max=1, min_open=True, max_open=True),
            default=0.2,
            show_default=True,
            help="With --eval clients: the share of each client's data held out for it.",
        ),
        click.option(
            "--executors",
            type=click.IntRange(min=0),
            default=None,
            help="Round jobs: processes that train the picked clients, in-process or on each "
            "daemon hosting clients [default: one per core (--local: the cores shared among "
            "the daemons); 0 trains in the submitting process or the daemon's job thread].",
        ),
        click.option(
            "--round-deadline",
            "round_deadline",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="SECONDS",
            help="Round jobs: the server aggregates what arrived this long after it sent a "
            "round's model (the federated codecs support it; late updates are dropped). On "
            "daemons: real seconds. In-process: the deadline passes once every client that "
            "can answer has answered.",
        ),
        click.option(
            "--dropout",
            type=click.FloatRange(min=0, max=1, max_open=True),
            default=0.0,
            show_default=True,
            help="Round jobs: probability that a picked client drops out of a round (it "
            "receives the model, trains nothing, sends nothing); drawn from (seed, round, "
            "client). Give --round-deadline too, or the server waits for it forever.",
        ),
        click.option(
            "--batch-records",
            "batch_records",
            is_flag=True,
            help="Round jobs: also write every client batch's loss to clients.csv.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func
