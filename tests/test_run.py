"""``python -m ftlab.run``: the script entry point trains from a config and rejects bad configs clearly."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ftlab.run import ConfigError, TRAIN_KEYS, check_batch, load_config, main

torch.set_num_threads(1)
CONFIGS = __import__("pathlib").Path(__file__).resolve().parent.parent / "configs"


def _run(tmp_path, task, config, *sets):
    out = tmp_path / task
    rc = main([task, "--config", str(CONFIGS / config), "--no-progress", "--set", "num_steps=3",
               f"output_dir={out}", *sets])
    return rc, out


def test_sft_lora_trains_a_few_steps_and_writes_history_and_adapter(tmp_path):
    rc, out = _run(tmp_path, "sft", "sft_tiny.yaml")
    assert rc == 0
    record = json.loads((out / "history.json").read_text())
    assert record["num_processes"] == 1 and len(record["losses"]) == 3
    assert all(math.isfinite(x) for x in record["losses"])
    assert record["losses"][-1] < record["losses"][0]
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_classifier_full_trains_from_a_jsonl_file(tmp_path):
    rows = tmp_path / "reviews.jsonl"
    texts = [("a lovely calm thing", 1), ("an awful broken thing", 0)] * 16
    rows.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in texts))
    rc, out = _run(tmp_path, "classifier", "classifier_tiny.yaml", f"data_path={rows}", "method=full",
                   "batch_size=8", "lr=1e-4")
    assert rc == 0
    record = json.loads((out / "history.json").read_text())
    assert record["config"]["method"] == "full" and len(record["losses"]) == 3
    assert (out / "model" / "config.json").is_file()


def test_shipped_configs_load():
    for path in sorted(CONFIGS.glob("*.yaml")):
        task = path.stem.split("_")[0]
        cfg = load_config(task, path)
        assert cfg["output_dir"].startswith("build/runs/"), path


def test_unknown_key_names_it_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_config("sft", CONFIGS / "sft_tiny.yaml", {"learning_rate": 1e-3})
    text = str(err.value)
    assert "learning_rate" in text and "sft_tiny.yaml" in text
    assert all(key in text for key in ("lr", "grad_accum", "target_modules", "data_path"))


def test_unknown_task_and_missing_config_file():
    with pytest.raises(ConfigError, match="unknown task 'ppo'"):
        load_config("ppo")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("sft", "configs/nope.yaml")


def test_missing_data_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"data_path '.*missing.jsonl' does not exist.*prompt.*response"):
        load_config("sft", None, {"data_path": str(tmp_path / "missing.jsonl")})


@pytest.mark.parametrize("key,value", [("grad_accum", 0), ("batch_size", 0), ("lr", -1.0), ("method", "qlora")])
def test_impossible_training_values(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config("sft", None, {key: value})


def test_yaml_exponent_without_a_dot_is_a_number():
    assert load_config("sft", None, {"lr": "1e-4"})["lr"] == 1e-4


def test_batch_larger_than_the_data():
    cfg = load_config("sft", None, {"batch_size": 8, "grad_accum": 2})
    check_batch(cfg, 16)
    with pytest.raises(ConfigError, match=r"8 x grad_accum=2 x 2 process\(es\) = 32 examples.*has 16"):
        check_batch(cfg, 16, world_size=2)


def test_bad_config_exits_2_before_loading_a_model(tmp_path, capsys):
    rows = tmp_path / "three.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n" for i in range(3)))
    assert main(["sft", "--set", f"data_path={rows}", "batch_size=8"]) == 2
    assert "training data has 3" in capsys.readouterr().err
    assert main(["sft", "--set", "epochs=3"]) == 2
    assert "num_epochs" in capsys.readouterr().err


def test_every_train_config_field_is_a_config_key():
    cfg = load_config("classifier")
    assert set(TRAIN_KEYS) <= set(cfg)


def test_dpo_lora_from_the_base_logs_trl_metrics_and_raises_chosen_over_rejected(tmp_path):
    rc, out = _run(tmp_path, "dpo", "dpo_tiny.yaml", "sft_adapter=null", "num_steps=6", "batch_size=8")
    assert rc == 0
    record = json.loads((out / "history.json").read_text())
    metrics = record["dpo_metrics"]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"} <= set(metrics[0])
    assert metrics[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)  # step 1: policy == reference
    assert metrics[-1]["rewards/margins"] > 0 and record["losses"][-1] < math.log(2)
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_dpo_full_uses_a_frozen_copy_as_the_reference(tmp_path):
    rc, out = _run(tmp_path, "dpo", "dpo_tiny.yaml", "sft_adapter=null", "method=full", "lr=1e-4",
                   "batch_size=4")
    assert rc == 0
    record = json.loads((out / "history.json").read_text())
    assert record["dpo_metrics"][0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert (out / "model" / "config.json").is_file()


def test_dpo_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="beta"):
        load_config("dpo", CONFIGS / "dpo_tiny.yaml", {"beta": 0})
    with pytest.raises(ConfigError, match="sft_adapter"):
        load_config("dpo", CONFIGS / "dpo_tiny.yaml", {"sft_adapter": str(tmp_path)})
