"""Owns the study report: one self-contained HTML file of a search (its figures are
nas.report.figures), and the trial lists the search summary shares with it.

`write_report(study, path)` reads a study through Optuna's public API and the records contract
(`nas.records`: the trial and study keys, `classify`, the retrain results recorded on the
study; per-epoch validation accuracy as intermediate values) and writes one HTML file
with plotly.js embedded once, so it opens offline. It holds the optimisation history, parameters
against validation accuracy with the budget line, the Pareto front and the rejected over-budget
candidates, parameter importances, per-epoch curves, "the best model at every size" (the
front's trials with the command that retrains each), and a table of the top trials.

Claims: every figure and count is built from the one trial classification
(`trial_view.classify`, the same the search and the retrain use), the params figure has exactly
one point per trained trial, and a study with no finished trial, or with trials missing
attributes, still gets a report instead of an error.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial
from plotly.offline import get_plotlyjs

from nas import records, trial_view
from nas.commands import retrain_command
from nas.config.costs import NAMES, cost_label, describe_limits, format_cost
from nas.config.data import DATASET_TABLE
from nas.files import safe_file_name, write_atomic
from nas.report.figures import NO_FINISHED_TRIAL, sections
from nas.report.trials import architecture_summary, hover_text, percent
from nas.search.front import front
from nas.search.time_budget import run_lines
from nas.search.winner import candidates, verdict_lines


def _ranked(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    trained = [t for t in trials if trial_view.is_trained(t)]
    return sorted(trained, key=lambda t: (-trial_view.accuracy(t), t.number))


def top_trials(trials: list[FrozenTrial], count: int = 10) -> list[FrozenTrial]:
    """The `count` trained trials of `trials` with the highest validation accuracy, best first."""
    return _ranked(trials)[:count]


def _data_label(data: object) -> str:
    """A study's data in words: `cifar10 at 32x32 px, all training images, 10 % held out (split
    seed 0)`: the image size is what the study's MACs, memory and latency were counted at."""
    if not isinstance(data, dict) or "dataset" not in data:
        return "not recorded"
    subset = data.get("subset")
    images = f"{subset:,} training images" if isinstance(subset, int) else "all training images"
    row = DATASET_TABLE.get(str(data["dataset"]))  # a study may name one no longer here
    if row is not None and row.generated:
        images += f" of {data.get('synthetic_size', '?')} generated"
    held_out = data.get("val_fraction")
    split = f", {held_out:.0%} held out for validation" if isinstance(held_out, float) else ""
    size = data.get("image_size")
    at = f" at {size}x{size} px" if isinstance(size, int) else ""
    return f"{data['dataset']}{at}, {images}{split} (split seed {data.get('split_seed', 0)})"


def _recipe_label(recipe: object) -> str:
    """A study's recipe in words: `Adam lr 0.001, batch 64, 40 epochs, augmentation ...`."""
    if not isinstance(recipe, dict) or "optimizer" not in recipe:
        return "not recorded"
    optimizer = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD"}.get(
        recipe["optimizer"], str(recipe["optimizer"])
    )
    if recipe["optimizer"] == "sgd":
        optimizer += f" momentum {recipe.get('momentum')}"
    augment = {
        "recipe": f"rotation, flip, crop, AutoAugment ({recipe.get('policy', 'cifar10')})",
        "basic": "rotation, flip, crop",
        "none": "none",
    }.get(recipe.get("augment"), str(recipe.get("augment")))
    if recipe.get("flip") is False:
        augment = augment.replace("flip, ", "")
    return (
        f"{optimizer} lr {recipe.get('lr')}, batch {recipe.get('batch_size')}, "
        f"{recipe.get('epochs')} epochs per candidate, augmentation: {augment}"
    )


def _header_html(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    limits = trial_view.budget_limits(study.user_attrs)
    counts = Counter(trial_view.classify(t) for t in trials)
    trained = [t for t in trials if trial_view.is_trained(t)]
    budgets = describe_limits(limits)
    objective, cost = trial_view.objective_of(study.user_attrs)
    rows: list[tuple[str, object]] = [
        ("study", study.study_name),
        ("budgets", budgets or "not recorded"),
        (
            "objective",
            f"Pareto: validation accuracy up, {cost_label(cost)} down"
            if objective == "pareto"
            else "validation accuracy",
        ),
        ("data", _data_label(study.user_attrs.get(records.DATASET))),
        ("recipe", _recipe_label(study.user_attrs.get(records.RECIPE))),
        ("trained", len(trained)),
        *((kind.value, counts[kind]) for kind in trial_view.TrialKind),
    ]
    # the winner the search names (nas.search.winner), the one `nas retrain --pick best` takes
    if objective != "pareto":
        ranked = candidates(study, trials)
        best = ranked[0].trial if ranked else None
        best_text = NO_FINISHED_TRIAL if best is None else hover_text(best).replace("<br>", ", ")
        rows.append(("winner", best_text))
    body = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(str(value))}</td></tr>"
        for name, value in rows
    )
    return f"<table class='summary'>{body}</table>"


def _verdict_html(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    """The first screen: how good the winner is and how sure we are (`nas.search.winner`), and how
    each run with a time limit spent it (`nas.search.time_budget`)."""
    lines = verdict_lines(study, trials) + run_lines(study.user_attrs)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<ul class='verdict'>{items}</ul>"


def _top_table_html(study: optuna.Study, trials: list[FrozenTrial], count: int) -> str:
    ranked = _ranked(trials)[:count]
    if not ranked:
        return f"<p>{NO_FINISHED_TRIAL}</p>"
    columns = (
        "rank|trial|state|best val accuracy (any epoch)|params|architecture|s / epoch"
        "|test accuracy (retrain)|run folder"
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns.split("|"))
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        params = trial_view.params_of(trial)
        seconds = trial.user_attrs.get(records.SECONDS_PER_EPOCH)
        retrained = records.retrain_record(study.user_attrs, trial)
        test = retrained.test_accuracy if retrained else None
        cells = [
            str(rank),
            str(trial.number),
            trial.state.name.lower(),
            percent(trial_view.accuracy(trial)),
            f"{params:,}" if params is not None else "-",
            architecture_summary(trial) + _warm_start_mark(trial),
            f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "-",
            percent(test) if isinstance(test, (int, float)) else "-",
            str(retrained.run_dir or "-") if retrained else "-",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"<table class='top'><tr>{head}</tr>{''.join(rows)}</table>"


FRONT_TITLE = "The best model at every size"


def front_rows(study: optuna.Study, trials: list[FrozenTrial], storage: str = ""):
    """(trial, its costs as text, the command that retrains it) for each trial on the study's
    Pareto front, cheapest first: what the report's table and the search summary list."""
    cost = trial_view.objective_of(study.user_attrs)[1]
    rows = []
    for trial in front(trials, cost):
        costs = [trial_view.cost_of(trial, name) for name in NAMES]
        rows.append(
            (
                trial,
                [format_cost(n, v) if v is not None else "-" for n, v in zip(NAMES, costs)],
                retrain_command(study.study_name, trial.number, storage),
            )
        )
    return rows


def _front_table_html(study: optuna.Study, trials: list[FrozenTrial], storage: str) -> str:
    rows = front_rows(study, trials, storage)
    if not rows:
        return f"<p>{NO_FINISHED_TRIAL}</p>"
    # the costs the study measured: latency and memory only where a budget asked for them
    shown = [i for i in range(len(NAMES)) if any(row[1][i] != "-" for row in rows)]
    columns = ["trial", "val accuracy", *(cost_label(NAMES[i]) for i in shown)]
    columns += ["architecture", "retrain it"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for trial, costs, command in rows:
        cells = [str(trial.number), percent(trial_view.accuracy(trial)), *(costs[i] for i in shown)]
        cells.append(architecture_summary(trial))
        text = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
        body.append(f"<tr>{text}<td><code>{html.escape(command)}</code></td></tr>")
    cost = cost_label(trial_view.objective_of(study.user_attrs)[1])
    note = (
        f"<p class='note'>Each row is a trial no other trial beats in both validation accuracy "
        f"and {html.escape(cost)}, cheapest first; trials trained to the end only.</p>"
    )
    return f"<table class='front'><tr>{head}</tr>{''.join(body)}</table>{note}"


def _warm_start_mark(trial: FrozenTrial) -> str:
    preset = trial.user_attrs.get(records.WARM_START)
    return f" (warm start: {preset})" if preset else ""


_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
p.note { color: #555; font-style: italic; }
"""


def render_report(study: optuna.Study, top: int = 10, storage: str = "") -> str:
    """The whole report as one HTML document with plotly.js embedded once. `storage`: the
    study's store, named in the retrain commands where it is not the default."""
    trials = study.get_trials(deepcopy=False)  # read once: every part describes the same trials
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>NAS report: {html.escape(study.study_name)}</title>",
        f"<style>{_STYLE}</style>",
        # Embedded, never a CDN link: the report must open on a machine without internet.
        f"<script type='text/javascript'>{get_plotlyjs()}</script>",
        "</head><body>",
        f"<h1>NAS report: {html.escape(study.study_name)}</h1>",
        _verdict_html(study, trials),
        _header_html(study, trials),
    ]
    for section in sections(study, trials):
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.figure is not None:
            # A fixed height: "100%" of a page-flow div can collapse to nothing.
            figure_html = section.figure.to_html(
                full_html=False, include_plotlyjs=False, default_height="480px"
            )
            parts.append(figure_html)
        if section.note:  # below its figure, where a reader looks next
            parts.append(f"<p class='note'>{html.escape(section.note)}</p>")
    parts.append(f"<h2>{FRONT_TITLE}</h2>")
    parts.append(_front_table_html(study, trials, storage))
    parts.append(f"<h2>Top {top} trials by validation accuracy</h2>")
    parts.append(_top_table_html(study, trials, top))
    parts.append("</body></html>")
    return "\n".join(parts)


def default_report_path(storage: str, study_name: str) -> Path:
    """Where a study's report goes unless the search was given one: beside its SQLite or journal
    file, else under studies/; the file is named after the study (`nas.files.safe_file_name`: the
    name itself when safe, else one no other study shares, never outside that folder)."""
    from nas.store.opening import store_file

    store = store_file(storage)
    folder = store.parent if store is not None else Path("studies")
    return folder / f"{safe_file_name(study_name)}.html"


def report_path(study: optuna.Study, storage: str) -> Path:
    """The study's report: the path its search was given (`records.REPORT_PATH`), else the
    default one, so every refresh (a retrain, `nas report`) rewrites the one file."""
    recorded = study.user_attrs.get(records.REPORT_PATH)
    return (
        Path(recorded)
        if isinstance(recorded, str)
        else default_report_path(storage, study.study_name)
    )


def record_report_path(study: optuna.Study, path: str | Path) -> None:
    """Remember where the search wrote the study's report (absolute: a later command may run
    from another folder)."""
    absolute = str(Path(path).resolve())
    if study.user_attrs.get(records.REPORT_PATH) != absolute:
        study.set_user_attr(records.REPORT_PATH, absolute)


def write_report(study: optuna.Study, path: str | Path, top: int = 10, storage: str = "") -> Path:
    """Write the report of `study` to `path` (parents created) and return the path.

    Written atomically (`nas.files`), so a reader (or a crash) never sees half a report.
    """
    return write_atomic(path, render_report(study, top, storage))
