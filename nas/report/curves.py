"""Owns a run's training curves, `curves.html`: loss and accuracy per epoch, train vs
validation, as one self-contained plotly page under the title its caller gives (the retrain's
is what the run is: `nas.run.retrain.curves_title`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the report imports no torch
    from nas.train.state import EpochRow


def curves_html(history: list[EpochRow], title: str) -> str:
    """Loss and accuracy (in percent, as the report and the console show it) per epoch, train
    vs validation, as one self-contained HTML page of a fixed size that reads on any window."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [row.epoch for row in history]
    figure = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy (%)"))
    series = {
        ("train", "loss"): [row.train_loss for row in history],
        ("val", "loss"): [row.val_loss for row in history],
        ("train", "accuracy"): [100 * row.train_accuracy for row in history],
        ("val", "accuracy"): [100 * row.val_accuracy for row in history],
    }
    for column, metric in ((1, "loss"), (2, "accuracy")):
        for split, dash in (("train", "solid"), ("val", "dash")):
            figure.add_trace(
                go.Scatter(
                    x=epochs,
                    y=series[split, metric],
                    name=f"{split} {metric}",
                    mode="lines+markers",
                    line={"dash": dash},
                ),
                row=1,
                col=column,
            )
    figure.update_xaxes(title_text="epoch", tick0=1, dtick=max(1, len(epochs) // 10))
    figure.update_yaxes(title_text="%", ticksuffix=" %", row=1, col=2)
    figure.update_layout(
        title={"text": title, "font": {"size": 15}},
        template="plotly_white",
        width=1100,
        height=450,
        autosize=False,
    )
    return figure.to_html(include_plotlyjs=True, full_html=True, default_width="1100px")
