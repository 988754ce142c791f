"""``psgd compare RUN_DIR...``: one figure overlaying runs, and their table."""

from __future__ import annotations

from pathlib import Path

import click

from psgd.errors import ConfigError

__all__ = ["compare"]


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--target",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Test accuracy to reach: adds the epochs (or rounds) each run needed.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Name of each run in the table and the legend, in the order of RUN_DIRS "
    "(default: its codec).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("compare.png"),
    show_default=True,
    help="The figure; the table is also written beside it as CSV (same name, .csv).",
)
@click.option(
    "--format",
    "table_format",
    type=click.Choice(["markdown", "csv"]),
    default="markdown",
    show_default=True,
    help="How the table is printed.",
)
def compare(
    run_dirs: tuple[Path, ...],
    target: float | None,
    labels: tuple[str, ...],
    out: Path,
    table_format: str,
) -> None:
    """Compare runs: accuracy against epochs or rounds, bytes sent and wall time.

    RUN_DIRS are run folders (runs/<job-id>), or folders holding run folders (runs/). Prints
    a table (codec, accuracy, epochs or rounds run and to --target, MB sent per worker, wall
    seconds) and writes the figure to --out and the table to the same name with .csv.
    """
    from psgd.results.compare import compare_rows, csv_table, find_runs, markdown_table
    from psgd.results.plot import plot_comparison

    try:
        runs = find_runs(run_dirs)
        if labels and len(labels) != len(runs):
            raise ConfigError(f"--label given {len(labels)} times for {len(runs)} runs")
        rows = compare_rows(runs, labels or None, target)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    table_csv = csv_table(rows, target)
    shown = markdown_table(rows, target) if table_format == "markdown" else table_csv
    click.echo(shown.rstrip("\n"))
    plot_comparison(out, runs, [row.label for row in rows])
    csv_path = out.with_suffix(".csv")
    csv_path.write_text(table_csv, encoding="utf-8")
    click.echo(f"figure: {out}  table: {csv_path}", err=True)
