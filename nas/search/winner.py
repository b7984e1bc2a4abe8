"""Owns which trial a search names best and how sure it is: the candidates and their evidence,
the race that decides which one a confirmation run (`nas.search.confirm`) trains next, the
winner, the record of it on the study, and the first lines of the summary and the report ("how
good is the winner, and how sure are we"). The one definition of the winner: the summary, the
report, the dashboard's study attribute and `nas retrain --pick best` (`nas.search.choice`) all
read it here. Reads the records contract only: no torch.

Claims:
- A candidate is an architecture trained to the end (`TrialKind.TRAINED`; a trial the pruner
  stopped ranks on fewer epochs and is no candidate, as `nas retrain --pick` never takes one):
  its runs are the validation accuracy of each of its trials (a retried architecture's records
  are one candidate, named by its lowest-numbered trial) and of each confirmation run of them;
  its score is the mean of its runs. `candidates(study)`: every one, best score first (ties:
  more runs, then the lower number).
- `winner(study)` is the first candidate: every candidate is compared by the same measure, the
  mean of its runs, so the winner is never below another candidate; a confirmation that
  diverged (recorded as 0.0) lowers its candidate's mean like any other run.
- `next_to_confirm(study)` is the race's next step: the best unconfirmed candidate while its one
  run stands at or above the best confirmed mean (or nothing is confirmed yet); None once the
  winner is confirmed and its mean stands above every unconfirmed candidate's one run
  (`settled`). A trial found after a confirmation that beats the confirmed mean is next.
- `verdict_lines(study, trials)`: the winner with its runs and their spread (or why it is not
  confirmed), its lead over the next two candidates with their runs (never negative), and the
  rank-fidelity line; a Pareto study names no single winner and says so.
- `winner_record(study)`: the winner and its evidence as the study records it for the dashboard
  (`records.WINNER`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.search.fidelity import rank_fidelity, recipe_epochs


@dataclass(frozen=True)
class Candidate:
    """An architecture trained to the end, with every run of it."""

    trial: FrozenTrial  # its lowest-numbered trial, which names it
    runs: tuple[tuple[object, float], ...]  # (seed, best validation accuracy): first runs first

    @property
    def score(self) -> float:
        return statistics.fmean(accuracy for _, accuracy in self.runs)

    @property
    def confirmed(self) -> bool:
        return len(self.runs) > 1

    @property
    def number(self) -> int:
        return self.trial.number

    def evidence(self) -> str:
        """Its runs: 'seed 0: 94.00%, seed 1: 92.00%'."""
        return ", ".join(f"seed {seed}: {accuracy:.2%}" for seed, accuracy in self.runs)

    def measured(self) -> str:
        """Its score and how it was measured: '90.00%, one run' or '92.00%: the mean of seed 0:
        96.00%, seed 1: 88.00%'."""
        if not self.confirmed:
            return f"{self.score:.2%}, one run"
        return f"{self.score:.2%}: the mean of {self.evidence()}"

    def spread(self) -> float:
        """Half the range of its runs, in points."""
        values = [accuracy for _, accuracy in self.runs]
        return (max(values) - min(values)) * 50


def confirmations(study: optuna.Study) -> dict[int, records.Confirmation]:
    """Trial number -> its confirmation record."""
    prefix = records.CONFIRM_PREFIX
    return {
        int(key.removeprefix(prefix)): records.Confirmation.from_dict(value)
        for key, value in study.user_attrs.items()
        if key.startswith(prefix) and key.removeprefix(prefix).isdigit()
    }


def candidates(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[Candidate]:
    """Every candidate with its runs, best score first (see the claims)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    done = confirmations(study)
    recipe = study.user_attrs.get(records.RECIPE)
    seed = recipe.get("seed", "?") if isinstance(recipe, dict) else "?"
    grouped: dict[object, list[FrozenTrial]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        if trial_view.classify(trial) == trial_view.TrialKind.TRAINED:
            grouped.setdefault(trial.user_attrs.get(records.ARCHITECTURE), []).append(trial)
    found = []
    for group in grouped.values():
        runs = [(seed, float(trial_view.accuracy(t))) for t in group]
        runs += [
            (done[t.number].seed, float(done[t.number].val_accuracy))
            for t in group
            if t.number in done
        ]
        found.append(Candidate(group[0], tuple(runs)))
    return sorted(found, key=lambda c: (-c.score, -len(c.runs), c.number))


def winner(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None
) -> tuple[FrozenTrial, float]:
    """The trial the search names best, and its score (see the claims); ValueError when no
    trial has trained to the end."""
    ranked = candidates(study, trials)
    if not ranked:
        raise ValueError("no trial has trained to the end yet")
    return ranked[0].trial, ranked[0].score


def next_to_confirm(study: optuna.Study) -> FrozenTrial | None:
    """The race's next confirmation run, None once it is settled (see the claims)."""
    ranked = candidates(study)
    confirmed = [c.score for c in ranked if c.confirmed]
    for candidate in ranked:
        if not candidate.confirmed:
            if not confirmed or candidate.score >= max(confirmed):
                return candidate.trial
            return None
    return None


def settled(study: optuna.Study) -> bool:
    """The winner is confirmed and no unconfirmed candidate's one run reaches its mean."""
    ranked = candidates(study)
    return bool(ranked) and ranked[0].confirmed and next_to_confirm(study) is None


def confirmation_epochs(study: optuna.Study) -> int:
    """Training epochs spent by the study's confirmation runs."""
    return sum(r.epochs for r in confirmations(study).values())


def winner_record(study: optuna.Study) -> dict | None:
    """The winner and its evidence, as recorded on the study (`records.WINNER`)."""
    ranked = candidates(study)
    if not ranked:
        return None
    best = ranked[0]
    return {
        "trial": best.number,
        "score": best.score,
        "runs": [accuracy for _, accuracy in best.runs],
        "settled": settled(study),
    }


def verdict_lines(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[str]:
    """How good is the winner, and how sure are we (see the claims). `trials`: the study's
    trials where the caller has read them already."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    fidelity = rank_fidelity(trials, recipe_epochs(study.user_attrs))
    last = f"rank fidelity: {fidelity.advice()}"
    if trial_view.objective_of(study.user_attrs)[0] == "pareto":
        return ["a Pareto study names no single winner: see the best model at every size", last]
    ranked = candidates(study, trials)
    if not ranked:
        return ["no trial has trained to the end yet", last]
    best = ranked[0]
    arch = best.trial.user_attrs.get(records.ARCH_LINE, "?")
    head = f"winner: trial {best.number} ({arch}), {best.score:.2%} validation accuracy"
    if best.confirmed:
        lines = [
            f"{head}, the mean of {len(best.runs)} runs ({best.evidence()}; spread "
            f"+-{best.spread():.1f} points)"
        ]
    elif any(c.confirmed for c in ranked):
        lines = [
            f"{head} from one training run, not confirmed: the confirmation runs of the "
            "candidates above it lowered their means and none was left for it (rerun the "
            "search, or raise --confirm)"
        ]
    else:
        lines = [
            f"{head} from one training run, not confirmed by a second seed (--confirm 0, or "
            "the run stopped first)"
        ]
    following = ranked[1:3]
    if following:
        leads = ", ".join(
            f"{max(0.0, best.score - other.score) * 100:+.1f} points over trial {other.number} "
            f"({other.measured()})"
            for other in following
        )
        close = ""
        if best.confirmed and (best.score - following[0].score) * 100 <= best.spread() + 1e-9:
            close = ": within the winner's spread over seeds, the runner-up may be as good"
        lines.append(f"its lead: {leads}{close}")
    lines.append(last)
    return lines
