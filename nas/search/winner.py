"""Owns which trial a search names best and how sure it is: the candidates a confirmation run
trains again (`nas.search.confirm`), the confirmation records on the study, the winner, and the
first lines of the summary and the report ("how good is the winner, and how sure are we"). Reads the
records contract only: no torch.

Claims:
- `candidates(trials, n)`: the `n` best trials that trained to the end (`TrialKind.TRAINED`),
  by validation accuracy, each architecture once (its lowest-numbered trial).
- `winner(study)` is the trial the search names best: the confirmed candidate with the highest
  mean; without any confirmation, the trained trial of highest validation accuracy (ties: the
  lower number). The score returned is the one it was named by.
- `confirmation_epochs(study)`: the training epochs the confirmation runs spent.
- `verdict_lines(study, trials)`: the winner with its confirmed accuracy and the spread over its
  seeds (or that it is not confirmed), its lead over the next candidates, and the rank-fidelity
  line.
"""

from __future__ import annotations

from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial

from nas import records, trial_view
from nas.search.fidelity import rank_fidelity, recipe_epochs


def candidates(trials: Iterable[FrozenTrial], n: int) -> list[FrozenTrial]:
    """The `n` best fully trained trials, one per architecture, best first."""
    seen: set[str] = set()
    ranked = []
    full = [t for t in trials if trial_view.classify(t) == trial_view.TrialKind.TRAINED]
    for trial in sorted(full, key=lambda t: (-trial_view.accuracy(t), t.number)):
        architecture = trial.user_attrs.get(records.ARCHITECTURE)
        if architecture in seen:
            continue
        seen.add(architecture)
        ranked.append(trial)
    return ranked[:n]


def confirmations(study: optuna.Study) -> dict[int, records.Confirmation]:
    """Trial number -> its confirmation record."""
    prefix = records.CONFIRM_PREFIX
    return {
        int(key.removeprefix(prefix)): records.Confirmation.from_dict(value)
        for key, value in study.user_attrs.items()
        if key.startswith(prefix) and key.removeprefix(prefix).isdigit()
    }


def unconfirmed(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The top `n` candidates that have no confirmation run yet."""
    done = confirmations(study)
    return [t for t in candidates(study.get_trials(deepcopy=False), n) if t.number not in done]


def winner(
    study: optuna.Study, trials: list[FrozenTrial] | None = None
) -> tuple[FrozenTrial, float]:
    """The trial the search names best, and the score it is named by (see the claims)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    done = confirmations(study)
    by_number = {t.number: t for t in trials}
    confirmed = [(number, r) for number, r in done.items() if number in by_number]
    if confirmed:
        number, record = max(confirmed, key=lambda item: (item[1].mean_val_accuracy, -item[0]))
        return by_number[number], float(record.mean_val_accuracy)
    trained = [t for t in trials if trial_view.is_trained(t)]
    if not trained:
        raise ValueError("no trial has trained yet")
    best = max(trained, key=lambda t: (trial_view.accuracy(t), -t.number))
    return best, float(trial_view.accuracy(best))


def confirmation_epochs(study: optuna.Study) -> int:
    """Training epochs spent by the study's confirmation runs."""
    return sum(r.epochs for r in confirmations(study).values())


def _next_candidates(
    study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial, n: int
) -> list[tuple[int, float, bool]]:
    """(trial number, score, confirmed) of the next `n` candidates after `best`: a confirmed
    candidate by its mean over seeds, any other by its one run's validation accuracy (with the
    default one confirmation run, only the winner has a mean)."""
    done = confirmations(study)
    scored = {k: (float(r.mean_val_accuracy), True) for k, r in done.items()}
    for trial in candidates(trials, n + 1 + len(done)):
        scored.setdefault(trial.number, (float(trial_view.accuracy(trial)), False))
    scored.pop(best.number, None)
    ranked = sorted(scored.items(), key=lambda item: (-item[1][0], item[0]))
    return [(number, score, confirmed) for number, (score, confirmed) in ranked[:n]]


def verdict_lines(study: optuna.Study, trials: list[FrozenTrial] | None = None) -> list[str]:
    """How good is the winner, and how sure are we: three lines (see the claims). `trials`:
    the study's trials where the caller has read them already."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    try:
        best, score = winner(study, trials)
    except ValueError:
        return ["no trial has finished training yet"]
    arch = best.user_attrs.get(records.ARCH_LINE, "?")
    record = confirmations(study).get(best.number)
    if record is not None:
        first, second = float(record.first_val_accuracy), float(record.val_accuracy)
        recipe = study.user_attrs.get(records.RECIPE)
        seed = recipe.get("seed", "?") if isinstance(recipe, dict) else "?"
        lines = [
            f"winner: trial {best.number} ({arch}), {score:.2%} validation accuracy, the mean of "
            f"2 seeds ({seed}: {first:.2%}, {record.seed}: {second:.2%}; spread "
            f"+-{abs(first - second) * 50:.1f} points)"
        ]
        spread = abs(first - second) * 50
    else:
        lines = [
            f"winner: trial {best.number} ({arch}), {score:.2%} validation accuracy from one "
            "training run, not confirmed by a second seed (--confirm 0, or the run stopped first)"
        ]
        spread = None
    following = _next_candidates(study, trials, best, 2)
    if following:
        leads = ", ".join(
            f"{(score - other) * 100:+.1f} points over trial {number} ({other:.2%}"
            f"{'' if confirmed or record is None else ', one run'})"
            for number, other, confirmed in following
        )
        close = ""
        if spread is not None and (score - following[0][1]) * 100 <= spread + 1e-9:
            close = ": within the winner's spread over seeds, the runner-up may be as good"
        lines.append(f"its lead: {leads}{close}")
    fidelity = rank_fidelity(trials, recipe_epochs(study.user_attrs))
    lines.append(f"rank fidelity: {fidelity.advice()}")
    return lines
