"""scripts/rehearse.py: it reads what the lessons print (memory plans) and writes the summary table."""

import importlib.util
from pathlib import Path

import pytest
import torch

from ftlab.budget import plan_run
from ftlab.runtime import CARDS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rehearse():
    spec = importlib.util.spec_from_file_location("rehearse", ROOT / "scripts" / "rehearse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _plan_line(card):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=16,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                                         vocab_size=128256, tie_word_embeddings=True))
    model.config._name_or_path = "meta-llama/Llama-3.2-1B"
    ids = torch.zeros(2, 128, dtype=torch.long)
    plan = plan_run(model, {"input_ids": ids}, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                    mixed_precision="bf16", gpu=card)
    return plan, plan.line()


def test_the_summary_parses_every_memory_plan_line(rehearse):
    plan, line = _plan_line(CARDS["l4"])
    m = rehearse.PLAN.match(line)
    assert m, line
    assert m["model"] == "meta-llama/Llama-3.2-1B"
    assert float(m["gpu"]) == pytest.approx(plan.gpu_peak / 2**30, abs=0.006)
    assert float(m["usable"]) == pytest.approx(22.0, abs=0.05)  # 23034 MiB - 0.5 GiB of CUDA context
    # priced at the real size: 1,235,814,400 parameters in fp32, trained in full with SGD
    assert plan.estimate.n_params == 1_235_814_400


def test_summary_rows_show_the_worst_plan_and_the_error(rehearse):
    _, line = _plan_line(CARDS["t4"])
    plans = [{**rehearse.PLAN.match(line).groupdict(), "line": line}]
    results = [{"lesson": "05_sft", "card": "t4", "amp": "fp16", "seconds": 12.3, "ok": True, "error": "",
                "headline": "", "plans": plans},
               {"lesson": "06_dpo", "card": "t4", "amp": "fp16", "seconds": 4.0, "ok": False,
                "error": "cell 7: MemoryError: does not fit", "headline": "", "plans": []}]
    text = rehearse.summary(results)
    rows = [r for r in text.splitlines() if r.startswith("| 0")]
    assert rows[0].split(" | ")[3].startswith(plans[0]["gpu"] + " / 14.5")
    assert rows[0].endswith("| 12.3 | ok |")
    assert "no training run" in rows[1] and "MemoryError: does not fit" in rows[1]
    assert "1/2 lesson runs ok" in text


def test_colab_minutes_add_up_the_plans_compute_and_the_allowance(rehearse):
    """Each plan line carries its run's arithmetic in minutes; a lesson's estimate is their sum plus
    the allowance, rounded up in docs/lesson_minutes.json."""
    plan, line = _plan_line(CARDS["t4"])
    assert plan.minutes is None and rehearse.PLAN.match(line)["minutes"] is None  # no step count given
    model_line = line + "; compute 1,234 TFLOP, about 1.7 min at the Tesla T4's practical 12 TFLOP/s"
    parsed = {**rehearse.PLAN.match(model_line).groupdict(), "line": model_line}
    assert parsed["tflop"] == "1,234" and parsed["minutes"] == "1.7"
    result = {"lesson": "05_sft", "card": "t4", "plans": [parsed, parsed], "seconds": 1.0, "ok": True,
              "amp": "fp16", "error": ""}
    assert rehearse.colab_minutes(result) == pytest.approx(rehearse.ALLOWANCE_MIN + 3.4)
    table = rehearse.minutes_table([result, {**result, "card": "l4", "plans": []}])
    assert table["minutes"] == {"05_sft": {"t4": 6, "l4": 2}}
    assert "| 5.4 | 1.0 | ok |" in rehearse.summary([result])


def test_unknown_card_is_refused(rehearse, capsys):
    with pytest.raises(SystemExit):
        rehearse.main(["--cards", "a100"])
    assert "use one or more of t4, l4" in capsys.readouterr().err


def test_standins_are_rebuilt_when_any_builder_is_newer_than_the_manifest(rehearse, tmp_path, monkeypatch):
    import os

    calls = []
    monkeypatch.setattr(rehearse.subprocess, "run", lambda *a, **k: calls.append(a))
    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    builders = sorted((ROOT / "scripts").glob("standins_*.py"))
    assert {p.name for p in builders} >= {"standins_lm.py", "standins_vision.py", "standins_tasks.py"}
    newest = max(p.stat().st_mtime for p in [ROOT / "scripts" / "build_standins.py", *builders])
    os.utime(manifest, (newest + 10, newest + 10))
    rehearse.ensure_standins(tmp_path)
    assert calls == [], "a manifest newer than every builder is up to date"
    for builder in builders:  # each builder on its own makes the stand-ins stale
        calls.clear()
        os.utime(manifest, (newest - 10, newest - 10))
        stamp = builder.stat().st_mtime
        try:
            os.utime(builder, (newest + 5, newest + 5))
            os.utime(manifest, (newest + 1, newest + 1))
            rehearse.ensure_standins(tmp_path)
        finally:
            os.utime(builder, (stamp, stamp))
        assert len(calls) == 1, f"{builder.name} newer than the manifest should rebuild the stand-ins"


def test_a_lessons_own_time_plan_counts_towards_its_minutes(rehearse):
    """The capstone budgets its time by hand ("Time plan: ... about N min ..."), without ftlab.budget:
    the rehearsal reads those lines too, and only those."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print(...)")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=(
        "Time plan: TinyLlama/TinyLlama_v1.1 LoRA on short_answers, 1 tokens x 4 x 1.1e+09 parameters = 5e+15 "
        "FLOPs, about 6.4 min at the Tesla T4's practical 12 TFLOP/s\n"
        "a plan: about 99 min (not a Time plan line)\n"))]
    nb.cells = [cell]
    times = rehearse.printed_lines(nb, rehearse.TIME_PLAN)
    assert [t["minutes"] for t in times] == ["6.4"]
    assert rehearse.memory_plans(nb) == []
    result = {"lesson": "11_day", "card": "t4", "plans": [], "time_plans": times, "seconds": 1.0, "ok": True,
              "amp": "fp16", "error": ""}
    assert rehearse.colab_minutes(result) == pytest.approx(rehearse.ALLOWANCE_MIN + 6.4)
    assert rehearse.minutes_table([result])["minutes"] == {"11_day": {"t4": 9}}
