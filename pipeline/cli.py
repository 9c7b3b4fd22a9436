"""The `winback` command line: one command per pipeline stage."""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline import stages
from pipeline.config import Params, load_params
from pipeline.engine import close_remote_session, memory_errors
from pipeline.errors import ExitCode, WinbackError
from pipeline.paths import Paths
from pipeline.run import params_for_output

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Churn prediction and win-back lists.")
console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
RootOpt = Annotated[Path, typer.Option("--root", help="directory the stage reads from and writes to")]
# OS errors that mean "the output cannot be written here" rather than a bug
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


def _run(stage: Callable[..., Any], params_path: Path, root: Path, **kwargs: Any) -> Any:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # a relative sqlite store lives under --root, as with `winback run --out`
        params = params_for_output(load_params(params_path), root)
        try:
            with memory_errors(params):
                return stage(params, Paths(root), **kwargs)
        finally:
            close_remote_session(params)
    except WinbackError as exc:
        console.print(f"[bold red]winback {stage.__name__} failed:[/] {exc}")
        raise typer.Exit(exc.exit_code) from exc
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        # writes go to a temporary file first: the failed one is removed, the last good output stays
        console.print(
            f"[bold red]winback {stage.__name__} failed:[/] cannot write {exc.filename or 'an output'}: "
            f"{exc.strerror}; free space or fix permissions and run it again (the previous output is unchanged)"
        )
        raise typer.Exit(ExitCode.OUTPUT) from exc


def _show(result: Any) -> None:
    console.print_json(json.dumps(result, default=str))


@app.command()
def generate(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Generate the built-in synthetic shop (events and, apart, its ground truth)."""
    _show(_run(stages.generate, params, root))


@app.command()
def ingest(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Validate and normalise the configured source; quarantine unusable rows."""
    _show(_run(stages.ingest, params, root))


@app.command()
def features(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Build labelled point-in-time snapshots for every labelable cutoff."""
    _show(_run(stages.features, params, root))


@app.command()
def train(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Train, calibrate and register the churn model in MLflow."""
    _show(_run(stages.train, params, root))


@app.command()
def evaluate(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Evaluate out of time against the baseline and decide on promotion."""
    result = _run(stages.evaluate, params, root)
    for name in ("model", "baseline_recency"):
        m = result[name]
        console.print(
            f"{name:>17}: ROC-AUC {m['roc_auc']:.4f}  PR-AUC {m['pr_auc']:.4f}  log loss {m['log_loss']:.4f}  "
            f"Brier {m['brier']:.4f}  ECE {m['ece']:.4f}  lift@10% {m['lift_top10']:.2f}"
        )
    console.print(f"promotion: {result['promotion']['decision']} ({result['promotion']['reason']})")


@app.command()
def explain(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Global SHAP drivers: plots and per-family totals under reports/."""
    _show(_run(stages.explain, params, root))


@app.command()
def score(
    as_of: Annotated[
        dt.datetime | None, typer.Option("--as-of", formats=["%Y-%m-%d"], help="scoring date (default: params)")
    ] = None,
    force: Annotated[
        str | None,
        typer.Option("--force", metavar="REASON", help="publish although a guard fails; the reason is recorded"),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Score the population at a date with @champion into the win-back list, published atomically."""
    if force is not None and not force.strip():
        console.print("[bold red]--force needs a reason[/], e.g. --force 'new tracking code, drift expected'")
        raise typer.Exit(ExitCode.CONFIG)
    summary = _run(stages.score, params, root, as_of=as_of.date() if as_of else None, force=force)
    out_dir = Paths(root).winback_dir(dt.date.fromisoformat(summary["as_of"]))
    console.print(f"win-back list: {out_dir / 'winback.csv'} ({summary['users']} users)")


@app.command()
def report(params: ParamsOpt = Path("params.yaml"), root: RootOpt = Path(".")) -> None:
    """Render report.html beside the latest win-back list."""
    _run(stages.report, params, root)
    where(root)


@app.command()
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="params file (same schema as params.yaml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for every output of the run")],
) -> None:
    """Run every stage on the source, mapping and churn definition in a config file."""
    from pipeline.run import run_all

    def progress(stage: str, _: Any) -> None:
        console.print(f"[green]done[/] {stage}")

    def run(params: Params, paths: Paths) -> Any:
        return run_all(params, paths.root, progress)

    _run(run, config, out)
    where(out)


@app.command()
def sensitivity(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    horizons: Annotated[str, typer.Option(help="comma-separated horizons in days")] = "30,60,90,180",
    qualifying: Annotated[str, typer.Option(help="comma-separated: any, purchase, or roles joined by +")] = (
        "any,purchase"
    ),
) -> None:
    """Sweep the churn definition: base rate, ROC-AUC and ECE per horizon and qualifying activity."""
    from pipeline import io
    from pipeline.sensitivity import sweep

    def run(p: Params, paths: Paths) -> Any:
        table = sweep(p, paths, [int(h) for h in horizons.split(",")], qualifying.split(","))
        io.write_csv(table, paths.root / "reports" / "label_sensitivity.csv")
        return table

    table = _run(run, params, root)
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    console.print(f"written: {Path(root) / 'reports' / 'label_sensitivity.csv'}")


@app.command()
def tune(
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    trials: Annotated[int, typer.Option(min=1, help="Optuna trials")] = 30,
    write: Annotated[bool, typer.Option("--write", help="write the best values into the params file")] = False,
) -> None:
    """Tune LightGBM on the time-ordered validation cutoff (trials logged to MLflow as nested runs)."""
    from pipeline import tracking
    from pipeline.build import read_snapshots
    from pipeline.tune import tune as run_tune
    from pipeline.tune import write_params

    def run(p: Params, paths: Paths) -> Any:
        tracking.setup(p.mlflow)
        return run_tune(read_snapshots(paths.snapshots), p, trials)

    best, loss = _run(run, params, root)
    console.print(f"best validation log loss {loss:.4f} with {best}")
    if write:
        write_params(params, best)
        console.print(f"written to {params}")


ReasonOpt = Annotated[str, typer.Option("--reason", help="why: recorded in the audit log (models/audit.jsonl)")]


def _reason(reason: str) -> str:
    if not reason.strip():
        console.print("[bold red]--reason must say why[/], e.g. --reason 'v7 wins the backtest; ECE checked'")
        raise typer.Exit(ExitCode.CONFIG)
    return reason.strip()


def _moved(entry: dict[str, Any], root: Path) -> None:
    console.print(f"v{entry['version']} is @champion (was v{entry['previous_champion']})")
    console.print(f"audit log: {Paths(root).audit_log}")


@app.command()
def promote(
    reason: ReasonOpt,
    version: Annotated[str | None, typer.Option(help="registered version to promote (default: @challenger)")] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Make a version @champion if it beats the champion on its test cutoff and passes the calibration bar."""
    from pipeline.build import read_snapshots
    from pipeline.promotion import promote as run_promote

    reason = _reason(reason)

    def promote(p: Params, paths: Paths) -> Any:
        return run_promote(p, read_snapshots(paths.snapshots), paths.audit_log, version, reason)

    entry = _run(promote, params, root)
    _moved(entry, root)


@app.command()
def rollback(
    reason: ReasonOpt,
    to_version: Annotated[
        str | None, typer.Option(help="version to make @champion (default: the champion before the current one)")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Move @champion back to the previous champion (or --to-version), recorded in the audit log."""
    from pipeline.promotion import rollback as run_rollback

    reason = _reason(reason)

    def rollback(p: Params, paths: Paths) -> Any:
        return run_rollback(p, paths.audit_log, to_version, reason)

    entry = _run(rollback, params, root)
    _moved(entry, root)


ListOpt = Annotated[str, typer.Option("--list", help="the list's date (outputs/winback/DATE/) or a list file")]


@app.command()
def measure(
    list_: ListOpt,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="confidence level of the intervals")] = 0.95,
) -> None:
    """Once the horizon has passed: churn of treatment vs holdout on a list, overall, per action and segment."""
    from pipeline.measure import run_measure

    def measure(p: Params, paths: Paths) -> Any:
        return run_measure(p, paths, list_, confidence)

    result = _run(measure, params, root)
    print_measure(result)


def print_measure(result: dict[str, Any]) -> None:
    """The measurement as a table on the terminal."""
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def pts(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:+.1f}"

    level = round(100 * result["confidence"])
    table = Table(title=f"campaign of {result['as_of']}: churn within {result['horizon_days']} days, selected users")
    for name in ("", "treatment", "holdout", "difference (pts)", f"{level}% CI (pts)", "relative", "p"):
        table.add_column(name, justify="left" if not name else "right")
    sections = [("overall", {"overall": result["overall"]})]
    sections += [("action", result["by_action"]), ("segment", result["by_segment"])]
    for scope, rows in sections:
        for name, r in rows.items():
            if r is None:
                continue
            label = name if scope == "overall" else f"{scope}: {name}"
            ci = "-" if r["ci_low"] is None else f"[{pts(r['ci_low'])}, {pts(r['ci_high'])}]"
            table.add_row(
                label,
                f"{pct(r['treatment_churn_rate'])} of {r['treatment_users']}",
                f"{pct(r['holdout_churn_rate'])} of {r['holdout_users']}",
                pts(r["difference"]),
                ci,
                pct(r["relative_effect"]),
                "-" if r["p_value"] is None else f"{r['p_value']:.3g}",
            )
    Console().print(table)
    log = result["contact_log"]
    console.print(
        f"contact log: {log['contacts_in_window']} contacts in the window; treatment contacted "
        f"{pct(log['treatment_contacted_share'])}, holdout contacted {pct(log['holdout_contacted_share'])}"
    )
    console.print(f"written: {Path(result['list']).parent / 'measure.json'} and measure.csv")


@app.command("simulate-campaign")
def simulate_campaign(
    list_: ListOpt,
    effect: Annotated[float, typer.Option(min=0.0, max=1.0, help="contacted users' churn hazard x (1 - effect)")] = 0.5,
    offset: Annotated[int, typer.Option(min=0, help="days from the list's as_of to the contacts")] = 0,
    return_share: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="share of contacted users who had left that come back")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
    root: RootOpt = Path("."),
) -> None:
    """Regenerate the synthetic shop with a campaign on a list (for testing `measure`); rewrites data/raw/."""
    from pipeline.campaign import list_path
    from pipeline.config import CampaignParams

    def simulate_campaign(p: Params, paths: Paths) -> Any:
        campaign = CampaignParams(
            list_path=str(list_path(paths, list_)), effect=effect, contact_day_offset=offset, return_share=return_share
        )
        return stages.generate(
            p.model_copy(update={"generate": p.generate.model_copy(update={"campaign": campaign})}), paths
        )

    result = _run(simulate_campaign, params, root)
    _show(result)
    console.print(f"contact log: {Paths(root).raw_contacts}; true effect: {Paths(root).campaign_truth}")
    console.print("next: `winback ingest`, then `winback measure --list DATE`")


@app.command()
def where(root: RootOpt = Path(".")) -> None:
    """Print where the latest win-back list and report are."""
    paths = Paths(root)
    if not paths.latest_score.exists():
        console.print("no win-back list yet: run `dvc repro` (or `make run`)")
        raise typer.Exit(1)
    latest = json.loads(paths.latest_score.read_text())
    typer.echo(f"win-back list: {Path(latest['dir']) / 'winback.csv'}")
    if paths.latest_report.exists():
        typer.echo(f"report:        {json.loads(paths.latest_report.read_text())['report']}")


if __name__ == "__main__":
    app()
