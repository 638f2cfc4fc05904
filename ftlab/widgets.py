"""ipywidgets explorers for the lessons. Each is a thin view over a pure function in the module
that owns the idea; the tests call that function, not the widget.

ipywidgets is imported when an explorer is built, so importing ftlab never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ftlab.lora import rank_alpha_summary

RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def format_rank_alpha(summary: dict) -> str:
    """The lines the rank/alpha explorer prints for one :func:`ftlab.lora.rank_alpha_summary`."""
    lines = [f"r = {summary['r']}, alpha = {summary['alpha']}, rsLoRA: {summary['rslora']}",
             f"  scale on B @ A:    {summary['scale']:.4g}  (alpha / r = {summary['alpha'] / summary['r']:.4g}, "
             f"rsLoRA alpha / sqrt(r) = {summary['scale_rslora']:.4g})",
             f"  trainable params:  {summary['trainable_params']:,}  "
             f"({summary['trainable_fraction']:.3%} of the base model)",
             f"  adapter file:      {summary['adapter_mb']:.3f} MB (fp32)"]
    if "energy_kept" in summary:
        lines.append(f"  a rank-{summary['r']} truncation keeps {summary['energy_kept']:.1%} of the "
                     "trained update's energy")
    return "\n".join(lines)


def rank_alpha_explorer(shapes: Sequence[tuple[int, int]], total_params: int,
                        singular_values: Sequence[float] | None = None, r: int = 8, alpha: float = 16):
    """Sliders for r and alpha and a box for rsLoRA over :func:`ftlab.lora.rank_alpha_summary` (lesson 02).

    ``shapes`` are the (d_out, d_in) of the layers LoRA wraps, ``total_params`` the base model's
    size, ``singular_values`` those of a trained update (optional). Returns the widget.
    """
    import ipywidgets as widgets

    max_rank = min(min(shape) for shape in shapes)
    ranks = [k for k in RANKS if k <= max_rank] or [max_rank]

    def show(r, alpha, rslora):
        print(format_rank_alpha(rank_alpha_summary(r, alpha, shapes, total_params, rslora, singular_values)))

    return widgets.interactive(
        show,
        r=widgets.SelectionSlider(options=ranks, value=r if r in ranks else ranks[0], description="r"),
        alpha=widgets.FloatLogSlider(value=alpha, base=2, min=0, max=8, step=1, description="alpha"),
        rslora=widgets.Checkbox(value=False, description="rsLoRA"))
