"""ftlab.widgets: the pure functions behind the explorers, called directly (no widget shown).

Lesson 07's memory explorer, its "what fits where" table and the largest batch that fits (both
in ftlab.memory, the calculator; the explorer only shows them) are checked against
ftlab.memory.estimate itself and against numbers worked out by hand.
"""

from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from ftlab import memory, widgets
from ftlab.drills import DRILLS
from ftlab.plots import plot_memory

GiB = 1024**3
LLAMA_1B_ALL_LINEAR_R16 = 16 * 16 * ((2048 + 2048) * 2 + (512 + 2048) * 2 + (8192 + 2048) * 3)


def _qlora_1b(**kw):
    args = dict(method="qlora", precision="fp16", optimizer="adamw8bit", r=16, target_modules="all-linear")
    return {**args, **kw}


def test_explorer_data_is_the_estimate_in_gib_with_fits_and_batches_per_gpu():
    data = widgets.memory_explorer_data("Llama-3.2-1B", "qlora", "fp16", "adamw8bit", r=16, batch_size=4,
                                        seq_len=512, grad_checkpointing=True)
    est = memory.estimate(memory.known_config("Llama-3.2-1B"), batch_size=4, seq_len=512, grad_checkpointing=True,
                          **_qlora_1b())
    assert data["estimate"].parts() == est.parts() and data["estimate"].label == "Llama-3.2-1B"
    assert data["estimate"].trainable == LLAMA_1B_ALL_LINEAR_R16 == 11_272_192
    assert data["parts_gib"] == pytest.approx({k: v / GiB for k, v in est.parts().items()})
    assert data["total_gib"] == pytest.approx(sum(data["parts_gib"].values()))
    assert set(data["fits"]) == set(data["headroom_gib"]) == set(data["max_batch"]) == {"T4", "L4", "A100-40GB"}
    for gpu in data["fits"]:
        assert data["fits"][gpu] == est.fits(gpu) and data["headroom_gib"][gpu] == pytest.approx(est.headroom(gpu) / GiB)
    assert data["max_batch"]["T4"] < data["max_batch"]["L4"] < data["max_batch"]["A100-40GB"]
    assert "T4" in data["text"] and "fits" in data["text"] and "11,272,192 trainable" in data["text"]


def test_explorer_adds_master_weights_only_to_full_fine_tuning():
    full = widgets.memory_explorer_data("Qwen2.5-0.5B", "full", "bf16", "adamw", master_weights=True)["estimate"]
    n = full.n_params
    assert full.weights == 6 * n and full.gradients == 2 * n and full.optimizer == 8 * n  # 16 bytes/param
    lora = widgets.memory_explorer_data("Qwen2.5-0.5B", "lora", "bf16", "adamw", master_weights=True)["estimate"]
    assert lora.weights == widgets.memory_explorer_data("Qwen2.5-0.5B", "lora", "bf16", "adamw")["estimate"].weights


def test_explorer_says_when_it_does_not_fit():
    data = widgets.memory_explorer_data("Llama-3-8B", "full", "bf16", "adamw", batch_size=1, seq_len=128,
                                        grad_checkpointing=False)
    assert not any(data["fits"].values()) and all(v < 0 for v in data["headroom_gib"].values())
    assert data["max_batch"] == {"T4": 0, "L4": 0, "A100-40GB": 0}
    assert data["text"].count("does not fit") == 3


def test_max_batch_size_is_the_largest_batch_that_fits():
    config = memory.known_config("Llama-3.2-1B")
    for gpu, ckpt, seq in (("T4", False, 1024), ("T4", True, 512), ("L4", False, 2048)):
        kw = _qlora_1b(seq_len=seq, grad_checkpointing=ckpt)
        b = memory.max_batch_size(config, gpu, **kw)
        assert memory.estimate(config, batch_size=b, **kw).fits(gpu)
        assert not memory.estimate(config, batch_size=b + 1, **kw).fits(gpu)
    assert memory.max_batch_size("Llama-3.2-1B", "T4", **_qlora_1b(seq_len=1024)) == 3
    assert memory.max_batch_size("Llama-3.2-1B", "T4", limit=2, **_qlora_1b(seq_len=128)) == 2


def test_drill_07c_is_the_calculators_answer():
    assert DRILLS["07c"].reference == memory.max_batch_size("Llama-3.2-1B", "T4", **_qlora_1b(seq_len=1024))


def test_drill_07e_is_the_fp32_embeddings_and_head_of_llama_3_8b():
    shape = memory.shape_from_config(memory.known_config("Llama-3-8B"))
    assert DRILLS["07e"].reference == pytest.approx(2 * shape.vocab * shape.hidden * 4 / 1e9, rel=1e-3)


def test_fit_table_rows_agree_with_the_estimate_and_the_known_facts():
    models = ["Qwen2.5-0.5B", "Llama-3.2-1B", "Llama-2-7B", "Llama-3-8B"]
    rows = memory.fit_table(models, batch_size=4, seq_len=512)
    assert [(r["model"], r["method"]) for r in rows] == [(m, k) for m in models for k in ("full", "lora", "qlora")]
    by = {(r["model"], r["method"]): r for r in rows}
    for row in rows:
        assert row["total_gib_ckpt"] < row["total_gib"]
        config = memory.known_config(row["model"])
        recipe = memory.RECIPES[row["method"]]
        plain = memory.estimate(config, batch_size=4, seq_len=512, **recipe)
        ckpt = memory.estimate(config, batch_size=4, seq_len=512, grad_checkpointing=True, **recipe)
        assert row["total_gib"] == pytest.approx(plain.total / GiB)
        for gpu, verdict in row["fits"].items():
            assert verdict == ("yes" if plain.fits(gpu) else "ckpt" if ckpt.fits(gpu) else "no")
    assert by[("Qwen2.5-0.5B", "full")]["fits"]["T4"] == "yes"            # 16 bytes x 0.5B = 7.9 GB
    assert by[("Llama-2-7B", "full")]["fits"] == {"T4": "no", "L4": "no", "A100-40GB": "no"}  # > 100 GB
    assert by[("Llama-3-8B", "qlora")]["fits"]["T4"] == "ckpt"            # QLoRA 8B on a T4 needs checkpointing
    assert by[("Llama-3.2-1B", "qlora")]["fits"]["T4"] == "yes"
    assert by[("Llama-2-7B", "full")]["params_b"] == pytest.approx(6.738, abs=1e-3)


def test_format_fit_table_has_a_line_per_row_and_a_column_per_gpu():
    rows = memory.fit_table(["Llama-3.2-1B"], gpus=("T4", "L4"))
    text = memory.format_fit_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows) and "T4" in lines[0] and "L4" in lines[0] and "A100" not in lines[0]
    assert lines[2].startswith("Llama-3.2-1B") and "full" in lines[2]
    assert memory.format_fit_table([]).splitlines()[0].startswith("model")


def test_the_explorer_shows_the_calculators_numbers_and_computes_none_of_its_own():
    # max_batch_size, fit_table and the recipes have one home, the calculator; widgets only imports them
    assert widgets.max_batch_size is memory.max_batch_size
    for name in ("fit_table", "format_fit_table", "MEMORY_RECIPES", "EXPLORER_GPUS"):
        assert not hasattr(widgets, name)
    data = widgets.memory_explorer_data("Llama-3.2-1B", **_qlora_1b(seq_len=1024, grad_checkpointing=False))
    assert data["max_batch"]["T4"] == memory.max_batch_size("Llama-3.2-1B", "T4", **_qlora_1b(seq_len=1024)) == 3


def test_plot_memory_stacks_the_four_parts_under_the_gpu_lines():
    config = memory.known_config("Llama-3.2-1B")
    estimates = {k: memory.estimate(config, batch_size=2, seq_len=256, **v) for k, v in memory.RECIPES.items()}
    fig = plot_memory(estimates, gpu_lines=("T4", "L4"))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    stacks = {}
    for patch in ax.patches:
        if patch.get_facecolor()[3] > 0:  # filled: a part (the hatched peak extra is hollow)
            stacks.setdefault(round(patch.get_x(), 6), []).append(patch.get_height())
    assert len(stacks) == 3 and all(len(s) == 4 for s in stacks.values())
    for (label, est), heights in zip(estimates.items(), stacks.values()):
        assert sum(heights) == pytest.approx(est.total / GiB)
    lines = [line.get_ydata()[0] for line in ax.get_lines()]
    assert lines == pytest.approx([(memory.GPUS[g] - memory.CUDA_CONTEXT) / GiB for g in ("T4", "L4")])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["full", "lora", "qlora"]
    assert ax.get_ylabel() == "memory (GiB)"


def test_memory_explorer_builds_its_controls():
    pytest.importorskip("ipywidgets")
    explorer = widgets.memory_explorer()
    names = {getattr(child, "description", None) for child in explorer.children}
    assert {"model", "method", "precision", "optimizer", "LoRA r", "batch", "seq len"} <= names


def test_plot_memory_draws_small_runs_in_mib_and_can_leave_the_peak_out():
    small = memory.estimate(1e6, method="full", precision="fp32")  # 16 MB: a bare count, no activations
    small.transient = 2**20  # as if the estimate had a 1 MiB short-lived buffer
    ax = plot_memory({"a": small}, gpu_lines=()).axes[0]
    assert ax.get_ylabel() == "memory (MiB)" and len(ax.patches) == 5  # four parts + the hatched peak
    ax = plot_memory({"a": small}, gpu_lines=(), show_peak=False).axes[0]
    assert len(ax.patches) == 4
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(small.total / 2**20)
    assert plot_memory({"a": small}, gpu_lines=("T4",)).axes[0].get_ylabel() == "memory (GiB)"


def test_beta_explorer_shows_the_toy_it_is_given_and_holds_no_lesson_data():
    # the toy answers, reference probabilities and rewards live in lesson 06, not in the view
    assert not [n for n in vars(widgets) if n.startswith("BETA_")]
    data = widgets.beta_explorer_data(1.0, (0.5, 0.5), (1.0, 0.0), ("good", "bad"))
    e = 2.718281828459045
    assert data["policy"] == pytest.approx([e / (e + 1), 1 / (e + 1)])  # pi_ref * exp(r / beta), normalised
    assert data["expected_reward"] == pytest.approx(e / (e + 1))
    assert "good" in data["text"] and "bad" in data["text"] and "Rome" not in data["text"]

