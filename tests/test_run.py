"""``python -m ftlab.run``: the script entry point trains from a config and rejects bad configs clearly."""

from __future__ import annotations

import json
import math

import pytest

from ftlab.run import ConfigError, TRAIN_KEYS, check_batch, load_config, main

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


# -- bad input: one line, exit 2, nothing trained -----------------------------------------------------

def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftlab.run: bad config: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_invalid_yaml_exits_2_with_the_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("lr: 1e-3\ntarget_modules: [q_proj, v_proj\n")
    err = _one_line_error(capsys, ["sft", "--config", str(path)])
    assert "broken.yaml is not valid YAML at line 3" in err


def test_a_key_given_twice_in_the_yaml_is_an_error(tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text("lr: 1.0e-3\nr: 4\nlr: 3.0e-3\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: key 'lr' is given twice \(lines 1 and 3\)"):
        load_config("sft", path)
    _one_line_error(capsys, ["sft", "--config", str(path)])


@pytest.mark.parametrize("task", ["sft", "dpo", "classifier"])
def test_ftlab_data_without_the_micro_world_exits_2_naming_the_folder(tmp_path, capsys, monkeypatch, task):
    monkeypatch.setenv("FTLAB_DATA", str(tmp_path))
    monkeypatch.setenv("FTLAB_PROFILE", "tiny")
    err = _one_line_error(capsys, [task, "--set", f"output_dir={tmp_path / 'out'}"])
    assert f"FTLAB_DATA={str(tmp_path)!r} names a folder without the micro-world" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("item, match", [("lr=[1,", r"--set value '\[1,' is not valid YAML"),
                                         ("lr", "--set wants KEY=VALUE"), ("=3", "--set wants KEY=VALUE")])
def test_a_bad_set_value_exits_2_with_one_line(capsys, item, match):
    err = _one_line_error(capsys, ["sft", "--set", item])
    assert __import__("re").search(match, err), err


def test_profile_garbage_exits_2_before_loading_anything(capsys):
    err = _one_line_error(capsys, ["sft", "--set", "profile=garbage"])
    assert "profile='garbage' is not a profile; use one of ['tiny', 'full']" in err


@pytest.mark.parametrize("key, value, match", [
    ("alpha", float("inf"), r"alpha=inf: a finite number > 0"),
    ("alpha", float("nan"), r"alpha=nan: a finite number > 0"),
    ("alpha", 0, r"alpha=0: a finite number > 0"),
    ("lora_dropout", "0.1x", r"lora_dropout='0.1x': a probability, a number in \[0, 1\)"),
    ("lora_dropout", 1.0, r"lora_dropout=1.0: a probability"),
    ("target_modules", [], r"target_modules=\[\]: it is empty"),
    ("target_modules", ["q_proj", 7], r"target_modules=.*\[7\] are not layer names"),
])
def test_lora_values_are_checked_as_ftlab_lora_checks_them(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config("sft", None, {key: value})


def test_a_string_target_modules_is_one_layer_name():
    assert load_config("sft", None, {"target_modules": "q_proj"})["target_modules"] == ["q_proj"]
    assert load_config("sft", None, {"target_modules": "all-linear"})["target_modules"] == "all-linear"
    assert load_config("classifier", None, {"target_modules": None})["target_modules"] == ["q_lin", "v_lin"]


def test_an_output_dir_that_cannot_be_written_is_refused_before_a_model_loads(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = _one_line_error(capsys, ["sft", "--set", f"output_dir={blocker / 'run'}"])
    assert "run' cannot be written" in err
    err = _one_line_error(capsys, ["sft", "--set", f"output_dir={blocker}"])
    assert "is a file, not a folder" in err


def test_an_earlier_runs_output_dir_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "history.json").write_text("{}")
    err = _one_line_error(capsys, ["sft", "--set", f"output_dir={out}"])
    assert "already holds files (history.json)" in err and "--overwrite" in err
    cfg = load_config("sft", None, {"output_dir": str(out), "overwrite": True})
    from ftlab.run import check_output_dir

    assert check_output_dir(cfg) == out and sorted(p.name for p in out.iterdir()) == ["history.json"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(load_config("sft", None, {"output_dir": str(empty)})) == empty
    assert not any(empty.iterdir())  # the write probe leaves nothing behind
    with pytest.raises(ConfigError, match="overwrite='yes' must be true or false"):
        load_config("sft", None, {"overwrite": "yes"})


def test_overwrite_flag_writes_over_an_earlier_run(tmp_path):
    rc, out = _run(tmp_path, "sft", "sft_tiny.yaml", "num_steps=2")
    assert rc == 0 and (out / "history.json").is_file()
    assert _run(tmp_path, "sft", "sft_tiny.yaml", "num_steps=2")[0] == 2
    rc = main(["sft", "--config", str(CONFIGS / "sft_tiny.yaml"), "--no-progress", "--overwrite",
               "--set", "num_steps=1", f"output_dir={out}"])
    assert rc == 0 and len(json.loads((out / "history.json").read_text())["losses"]) == 1
