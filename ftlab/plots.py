"""Small figure functions the lessons call; each returns a matplotlib ``Figure``.

Conventions: every axis is labelled with its quantity (and unit); a function draws on ``ax``
when given one (to compose panels) and otherwise makes its own figure. Library code never
calls ``plt.show()``: a Figure returned as a cell's last expression is shown by Jupyter, and a
script saves it with ``fig.savefig(...)``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def _new_axes(ax, figsize=(6.0, 3.5)):
    """``(figure, ax)``: the given axes, or a fresh figure closed in pyplot.

    Closing it keeps Jupyter from drawing it twice (once by pyplot at the end of the cell, once
    as the returned value); it is still shown when returned, and can still be saved.
    """
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig, ax


def plot_k_shot(curves: dict, zero_shot: dict | None = None, chance: float | None = None,
                ax=None, title: str = "few-shot: accuracy vs labelled examples per class") -> Figure:
    """Accuracy against k (labelled examples per class, log axis), one line per method.

    ``curves`` maps a label to ``{"shots": [...], "probe": [...], ...}`` as
    :func:`ftlab.probe.k_shot_curve` returns it, or to a pair ``(shots, accuracies)``; every
    key other than ``shots`` and ``*_std`` becomes a line named ``"<label> <key>"``.
    ``zero_shot`` maps labels to accuracies drawn as dashed horizontal lines (they use no
    labelled example); ``chance`` a dotted one. Accuracies in 0..1 are drawn as percent (lesson 01).
    """
    fig, ax = _new_axes(ax, figsize=(6.5, 4.0))
    lines = []
    for label, curve in curves.items():
        if isinstance(curve, dict):
            lines += [(f"{label} {key}", curve["shots"], values) for key, values in curve.items()
                      if key != "shots" and not key.endswith("_std")]
        else:
            lines.append((label, *curve))
    for i, (name, shots, values) in enumerate(lines):
        ax.plot(shots, [100 * v for v in values], "o-", color=f"C{i % 10}", label=name, linewidth=1.5)
    for j, (name, value) in enumerate((zero_shot or {}).items(), start=len(lines)):
        ax.axhline(100 * value, color=f"C{j % 10}", linestyle="--", linewidth=1.5, label=f"{name} (0 labels)")
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log", base=2)
    shots = sorted({s for _, xs, _ in lines for s in xs})
    if shots:
        ax.set_xticks(shots, [str(s) for s in shots])
    ax.set_xlabel("labelled examples per class (k)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(title)
    return fig


def plot_history(history, metrics: list[str] | str | None = None, ax=None) -> Figure:
    """Training loss per optimizer step, with eval metrics at the steps they were measured.

    ``history`` is an :class:`ftlab.train.History`. ``metrics`` picks eval metrics by name
    (default: all of them). Metrics whose name contains "loss" share the loss axis (train vs
    eval loss, the over-fitting picture); others (accuracy, ...) get a second y-axis on the
    right. Used after every training run (lessons 01 to 10).
    """
    fig, ax = _new_axes(ax)
    if isinstance(metrics, str):
        metrics = [metrics]
    if metrics is None:
        metrics = list(dict.fromkeys(k for e in history.evals for k in e.metrics))

    steps = [s.step for s in history.steps]
    ax.plot(steps, [s.loss for s in history.steps], label="train loss", color="C0", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean per item)")
    ax.grid(alpha=0.3)

    loss_like = [m for m in metrics if "loss" in m.lower()]
    others = [m for m in metrics if m not in loss_like]
    for i, name in enumerate(loss_like, start=1):
        xs, ys = history.metric(name)
        ax.plot(xs, ys, "o-", color=f"C{i}", label=_eval_label(name))
    right = None
    if others:
        right = ax.twinx()
        for i, name in enumerate(others, start=len(loss_like) + 1):
            xs, ys = history.metric(name)
            right.plot(xs, ys, "s--", color=f"C{i}", label=_eval_label(name))
        right.set_ylabel(others[0] if len(others) == 1 else "eval metric")

    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="best", fontsize="small")
    ax.set_title(f"training: {len(steps)} steps, final loss "
                 + (f"{history.final_loss:.4f}" if history.final_loss is not None else "n/a"))
    return fig


def _eval_label(name: str) -> str:
    return name if name.lower().startswith("eval") else f"eval {name}"


def plot_singular_values(spectra: dict, r: int | None = None, ax=None) -> Figure:
    """Singular values of weight updates, largest first, one line per layer, on a log axis.

    ``spectra`` maps a layer name to its singular values (a 1-D tensor or list). ``r`` marks the
    LoRA rank: an update ``B @ A`` of rank r has at most r values above rounding noise (lesson 02).
    """
    fig, ax = _new_axes(ax)
    for i, (name, values) in enumerate(spectra.items()):
        values = [float(v) for v in values]
        ax.semilogy(range(1, len(values) + 1), values, ".-", color=f"C{i % 10}", label=name, linewidth=1)
    if r is not None:
        ax.axvline(r + 0.5, color="grey", linestyle="--", linewidth=1, label=f"rank r = {r}")
    ax.set_xlabel("singular value index (largest first)")
    ax.set_ylabel("singular value")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="best", fontsize="x-small", ncol=2)
    ax.set_title("spectrum of the trained update ΔW = scale · B A")
    return fig


MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations")


def plot_memory(estimates: dict, gpu_lines=("T4", "L4"), ax=None, title: str = "training memory, part by part",
                show_peak: bool = True) -> Figure:
    """Stacked bars of the four parts of training memory, one bar per estimate (lesson 07).

    ``estimates`` maps a label to a :class:`ftlab.memory.MemoryEstimate` (predicted or measured).
    Bars are in GiB, or in MiB when every bar is under 1 GiB; the number on a bar is its total.
    Each GPU in ``gpu_lines`` is a dashed line at what a training process can use on it (the card
    less the CUDA context), so a bar that crosses a line does not fit that card. With
    ``show_peak``, the short-lived buffers an estimate adds at its peak (``transient``, if any) are
    a hatched cap, written as ``+x`` under the total.
    """
    from ftlab.memory import CUDA_CONTEXT, GPUS, GiB

    fig, ax = _new_axes(ax, figsize=(min(12.0, max(4.5, 1.1 * len(estimates) + 2.5)), 4.0))
    small = not gpu_lines and all(e.total < GiB for e in estimates.values())
    unit, scale = ("MiB", 2**20) if small else ("GiB", GiB)
    xs = range(len(estimates))
    bottoms = [0.0] * len(estimates)
    for i, part in enumerate(MEMORY_PARTS):
        heights = [getattr(e, part) / scale for e in estimates.values()]
        ax.bar(xs, heights, bottom=bottoms, color=f"C{i}", label=part, width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    extras = [getattr(e, "transient", 0) / scale if show_peak else 0.0 for e in estimates.values()]
    if any(extras):
        ax.bar(xs, extras, bottom=bottoms, color="none", edgecolor="grey", hatch="//", width=0.6,
               label="peak extra (loss gradients)")
    for x, total, extra in zip(xs, bottoms, extras):
        text = f"{total:.1f}" + (f"\n+{extra:.1f}" if extra else "")
        ax.annotate(text, (x, total + extra), ha="center", va="bottom", fontsize="x-small")
    for j, gpu in enumerate(gpu_lines):
        usable = (GPUS[gpu] - CUDA_CONTEXT) / scale
        ax.axhline(usable, color=("black", "C4", "C5", "C6")[j % 4], linestyle=("--", "-.", ":")[j % 3],
                   linewidth=1.2, label=f"{gpu}: {usable:.1f} {unit} usable")
    ax.set_xticks(list(xs), list(estimates), fontsize="small")
    ax.set_ylabel(f"memory ({unit})")
    ax.margins(y=0.12)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize="x-small")
    ax.set_title(title)
    return fig
