"""ipywidgets explorers for the lessons. Each is a thin view over a pure function in the module
that owns the idea (``ftlab.lora``, ``ftlab.memory``, ``ftlab.dpo``); the tests call that function,
not the widget. The ``*_data`` and ``format_*`` functions here only arrange those numbers for display.

ipywidgets is imported when an explorer is built, so importing ftlab never needs it.

Every explorer is an :func:`explorer_class` widget, not a plain ``ipywidgets.interactive``: that
one catches an error in its callback (it shows the traceback in its output under IPython, logs a
warning outside it) and goes on, so code that moves a control, a test, never sees the error, and
with ipywidgets 7 (Colab's) the cell that builds a broken explorer does not fail. Here the
traceback shows in the explorer's output and the error is raised again, to whoever moved it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from ftlab.lora import rank_alpha_summary
from ftlab.memory import (FIT_GPUS, KNOWN_MODELS, OPTIMIZERS, PRECISIONS, RECIPES, GiB, estimate, known_config,
                          max_batch_size)

RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@functools.cache
def explorer_class():
    """The widget class every explorer here returns: ``ipywidgets.interactive`` whose ``update``
    (run when the explorer is built, with ipywidgets 7 too, and whenever a control changes) does not swallow the
    callback's error. It shows the traceback in the explorer's output area (where the student
    looks) and raises the error again, so that building the explorer in a cell fails that cell
    and setting a control's ``value`` from code raises."""
    import IPython
    import ipywidgets as widgets
    from IPython.display import clear_output
    from ipywidgets.widgets.interaction import show_inline_matplotlib_plots

    class Explorer(widgets.interactive):
        def __init__(self, *args, **kwargs):
            self._has_run = False
            super().__init__(*args, **kwargs)
            if not self._has_run:
                # ipywidgets 7 (Colab's) runs the callback first when the widget is displayed, where
                # an error is only printed: run it here, as ipywidgets 8 does, so the cell fails
                self.on_displayed(self.update, remove=True)
                self.update()

        def update(self, *args):
            self._has_run = True
            self.kwargs = {w._kwarg: w.get_interact_value() for w in self.kwargs_widgets}
            error = None
            show_inline_matplotlib_plots()
            # the error is caught inside the output's block: ipywidgets' Output swallows one that
            # leaves it under IPython (after showing it), and this one must go on
            with self.out:
                if self.clear_output:
                    clear_output(wait=True)
                try:
                    self.result = self.f(**self.kwargs)
                    show_inline_matplotlib_plots()
                except Exception as exc:
                    error = exc
                    shell = IPython.get_ipython()
                    if shell is not None:
                        shell.showtraceback()
            if error is not None:
                raise error

    return Explorer


def _interactive(show, **controls):
    """``ipywidgets.interactive(show, **controls)``, as an :func:`explorer_class` widget."""
    return explorer_class()(show, **controls)


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

    return _interactive(
        show,
        r=widgets.SelectionSlider(options=ranks, value=r if r in ranks else ranks[0], description="r"),
        alpha=widgets.FloatLogSlider(value=alpha, base=2, min=0, max=8, step=1, description="alpha"),
        rslora=widgets.Checkbox(value=False, description="rsLoRA"))


# -- lesson 07: the memory explorer ----------------------------------------------------------------

def memory_explorer_data(model="Llama-3.2-1B", method="qlora", precision="bf16", optimizer="adamw8bit",
                         r: int = 16, batch_size: int = 4, seq_len: int = 512, grad_checkpointing: bool = True,
                         target_modules="all-linear", master_weights: bool = False,
                         gpus=FIT_GPUS) -> dict:
    """What the memory explorer shows for one setting (lesson 07), as plain values.

    Returns ``estimate`` (the :class:`~ftlab.memory.MemoryEstimate`), ``parts_gib`` and
    ``total_gib`` (GiB), and per GPU in ``gpus``: ``fits`` (bool), ``headroom_gib`` (GiB left,
    negative when short) and ``max_batch`` (the largest batch that fits at this ``seq_len``, from
    :func:`ftlab.memory.max_batch_size`); ``text``: the lines the explorer prints.
    """
    config = known_config(model) if isinstance(model, str) else model
    kwargs = dict(method=method, precision=precision, optimizer=optimizer, r=r, target_modules=target_modules,
                  seq_len=seq_len, grad_checkpointing=grad_checkpointing,
                  master_weights=master_weights and method == "full")
    est = estimate(config, batch_size=batch_size, **kwargs)
    est.label = model if isinstance(model, str) else type(config).__name__
    data = {"estimate": est, "parts_gib": {k: v / GiB for k, v in est.parts().items()},
            "total_gib": est.total / GiB,
            "fits": {g: est.fits(g) for g in gpus},
            "headroom_gib": {g: est.headroom(g) / GiB for g in gpus},
            "max_batch": {g: max_batch_size(config, g, **kwargs) for g in gpus}}
    lines = [f"{est.label}, {method}: {est.n_params / 1e9:.2f}B parameters, {est.trainable:,} trainable; "
             f"batch {batch_size} x {seq_len} tokens, checkpointing {'on' if grad_checkpointing else 'off'}"]
    lines += [f"  {k:12} {v:8.2f} GiB" for k, v in data["parts_gib"].items()]
    lines.append(f"  {'total':12} {data['total_gib']:8.2f} GiB")
    for g in gpus:
        room = data["headroom_gib"][g]
        verdict = f"fits, {room:.1f} GiB spare" if data["fits"][g] else f"does not fit, {-room:.1f} GiB short"
        lines.append(f"  {g:10} {verdict}; largest batch at {seq_len} tokens: {data['max_batch'][g]}")
    data["text"] = "\n".join(lines)
    return data


def memory_explorer(model="Llama-3.2-1B", method="qlora", precision="bf16", optimizer="adamw8bit", r=16,
                    batch_size=4, seq_len=512, grad_checkpointing=True, gpu_lines=("T4", "L4")):
    """Dropdowns and sliders over :func:`memory_explorer_data` (lesson 07): the stacked bars of
    the four parts against the T4/L4 lines, and whether (and at what batch) it fits. Returns the widget."""
    import ipywidgets as widgets
    from IPython.display import display

    from ftlab.plots import plot_memory

    def show(model, method, precision, optimizer, r, batch_size, seq_len, grad_checkpointing, master_weights):
        data = memory_explorer_data(model, method, precision, optimizer, r, batch_size, seq_len,
                                    grad_checkpointing, master_weights=master_weights)
        print(data["text"])
        display(plot_memory({f"{model}\n{method}": data["estimate"]}, gpu_lines=gpu_lines))

    return _interactive(
        show,
        model=widgets.Dropdown(options=list(KNOWN_MODELS), value=model, description="model"),
        method=widgets.Dropdown(options=list(RECIPES), value=method, description="method"),
        precision=widgets.Dropdown(options=list(PRECISIONS), value=precision, description="precision"),
        optimizer=widgets.Dropdown(options=list(OPTIMIZERS), value=optimizer, description="optimizer"),
        r=widgets.SelectionSlider(options=[k for k in RANKS if k <= 128], value=r, description="LoRA r"),
        batch_size=widgets.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=batch_size, description="batch"),
        seq_len=widgets.SelectionSlider(options=[128, 256, 512, 1024, 2048, 4096, 8192], value=seq_len,
                                        description="seq len"),
        grad_checkpointing=widgets.Checkbox(value=grad_checkpointing, description="gradient checkpointing"),
        master_weights=widgets.Checkbox(value=False, description="fp32 master weights (full)"))


# -- lesson 06: the beta explorer ------------------------------------------------------------------

def beta_explorer_data(beta: float, ref_probs: Sequence[float], rewards: Sequence[float],
                       answers: Sequence[str]) -> dict:
    """The KL-regularised optimum for one ``beta`` (lesson 06): ``pi*(y) = pi_ref(y) exp(r(y)/beta) / Z``.

    ``ref_probs``, ``rewards`` and ``answers`` are the lesson's toy: the reference's probability,
    the reward and the text of each answer (lesson 06 defines them where it teaches the closed form).

    Returns ``policy`` (probabilities), ``kl`` (KL(pi* || pi_ref) in nats), ``expected_reward``
    and ``text`` (a table). Small beta: pi* piles onto the best answer, far from the reference;
    large beta: pi* stays close to pi_ref. See :func:`ftlab.dpo.optimal_policy`.
    """
    from ftlab.dpo import optimal_policy

    policy, kl = optimal_policy(ref_probs, rewards, beta)
    expected = sum(p * r for p, r in zip(policy, rewards))
    lines = [f"beta = {beta:g}: KL(pi* || pi_ref) = {kl:.3f} nats, expected reward {expected:+.2f}",
             f"  {'answer':40} {'reward':>6} {'pi_ref':>6} {'pi*':>6}"]
    lines += [f"  {a:40} {r:+6.1f} {q:6.2f} {p:6.2f}" for a, r, q, p in zip(answers, rewards, ref_probs, policy)]
    return {"beta": beta, "policy": policy, "kl": kl, "expected_reward": expected, "text": "\n".join(lines)}


def beta_explorer(ref_probs: Sequence[float], rewards: Sequence[float], answers: Sequence[str],
                  beta: float = 0.1, measured: dict | None = None):
    """A log slider for beta over :func:`beta_explorer_data` on the lesson's toy (lesson 06).
    ``measured`` maps a beta to the KL a real DPO run reached, printed under the table. Returns the widget."""
    import ipywidgets as widgets

    def show(beta):
        print(beta_explorer_data(beta, ref_probs, rewards, answers)["text"])
        for b, kl in sorted((measured or {}).items()):
            print(f"measured in this lesson: DPO with beta = {b:g} -> KL to the reference {kl:.4f} nats/token")

    return _interactive(show, beta=widgets.FloatLogSlider(value=beta, base=10, min=-2, max=1, step=0.1,
                                                                 description="beta"))
