"""The script entry point: ``python -m ftlab.run <task> --config configs/<file>.yaml`` (lesson 10).

It runs a lesson's training outside a notebook, with the code the notebooks use
(:func:`ftlab.train.train`, :mod:`ftlab.models`, :mod:`ftlab.data`), so it also runs unchanged
on several processes::

    python -m ftlab.run sft --config configs/sft_tiny.yaml                       # one process
    torchrun --standalone --nproc_per_node 2 -m ftlab.run sft --config configs/sft_tiny.yaml  # 2 CPU processes
    accelerate launch --num_processes 8 -m ftlab.run sft --config configs/sft_full.yaml  # 8 GPUs

Tasks:

- ``sft``: causal-LM instruction tuning of :func:`ftlab.models.load_causal_lm` on prompt/response
  rows (the prompt masked out of the loss), LoRA or full fine-tuning;
- ``classifier``: the text micro-world's sentiment classifier (:func:`ftlab.models.load_text_encoder`
  on text/label rows), LoRA or full;
- ``dpo``: preference tuning (lesson 06) on prompt/chosen/rejected rows with :func:`ftlab.dpo.train_dpo`:
  the SFT adapter (``sft_adapter``: a folder, ``auto`` for lesson 05's if it is on disk, or null)
  is merged into the base, a fresh LoRA trains on top, and the reference is the same model with
  that LoRA disabled; with ``method: full`` the reference is a frozen copy.

A config is one flat YAML mapping: the task's keys (:data:`TASK_KEYS`) and any
:class:`ftlab.train.TrainConfig` field (``lr``, ``num_steps``, ``batch_size``, ``grad_accum``...).
``--set key=value`` overrides a key from the command line. A bad config fails before any model
loads, with a message that names the key: an unknown key (the known ones are listed), a key given
twice in the file, invalid YAML, a bad value (``alpha``, ``lora_dropout`` and ``target_modules`` are
checked as :mod:`ftlab.lora` checks them; a single ``target_modules`` string is one layer name, or
``all-linear``), a data path that does not exist, or a batch the data cannot fill. The command
then exits with status 2 and the message, without a traceback.

``output_dir`` is checked before the first step: it must be writable, and a folder that already
holds files (an earlier run) is refused unless ``--overwrite`` (or ``overwrite: true``) says to
write over it; nothing is deleted, the new run's files replace the old ones of the same name.

``batch_size`` is per process: with N processes one optimizer step sees
``batch_size * grad_accum * N`` examples (2 processes with ``grad_accum: 1`` take the same steps as
one process with ``grad_accum: 2``; ``tests/test_ddp.py`` proves it). The main process writes
``history.json`` (the loss of every step) and the trained weights (the adapter for LoRA) to
``output_dir``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import yaml

from ftlab.lora import check_alpha, check_dropout, check_targets
from ftlab.runtime import PROFILES, quiet
from ftlab.train import TrainConfig

TASKS = ("sft", "classifier", "dpo")
METHODS = ("lora", "full")

# The task's own keys and their defaults; every TrainConfig field is allowed too.
COMMON_KEYS = {
    "method": "lora",          # "lora" (frozen base + adapters) or "full" (every weight trains)
    "r": 8,                    # LoRA rank
    "alpha": 16,               # LoRA scale numerator: the update is scaled by alpha / r
    "lora_dropout": 0.0,       # dropout on the LoRA input (0 keeps runs on N processes identical)
    "target_modules": None,    # LoRA targets: a list of layer names, one name, or "all-linear"; None = the task's default
    "data_path": None,         # a .jsonl file of rows; None = the course's dataset for the profile
    "train_size": None,        # use the first N rows (None = all)
    "max_length": 64,          # tokens per example
    "output_dir": "build/runs/run",  # history.json and the trained weights go here
    "overwrite": False,        # write into an output_dir that already holds files (--overwrite)
    "profile": None,           # "tiny" or "full"; None = FTLAB_PROFILE or the machine's default
}
TASK_KEYS = {
    "sft": {**COMMON_KEYS, "target_modules": ["q_proj", "v_proj"]},
    "classifier": {**COMMON_KEYS, "target_modules": ["q_lin", "v_lin"], "num_labels": 2},
    "dpo": {**COMMON_KEYS, "target_modules": "all-linear", "max_length": None, "beta": 0.1,
            "sft_adapter": "auto"},
}
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))
DATA_COLUMNS = {"sft": ("prompt", "response"), "classifier": ("text", "label"),
                "dpo": ("prompt", "chosen", "rejected")}


class ConfigError(ValueError):
    """A config the run cannot use; the message names the key and what would be valid."""


# -- the config -------------------------------------------------------------------------------

class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that a key given twice in one mapping is an error, not "last wins"."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                continue  # not a valid key at all: SafeLoader's own error follows
            if key in seen:
                raise ConfigError(f"key {key!r} is given twice (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one.")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _load_yaml(text: str, where: str):
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}.") from None


def parse_value(text: str):
    """``--set`` values are YAML: ``3e-4`` is a float, ``null`` None, ``[q_proj, v_proj]`` a list."""
    return _load_yaml(text, f"--set value {text!r}")


def parse_sets(items) -> dict:
    """``["lr=3e-4", "r=4"]`` -> ``{"lr": 3e-4, "r": 4}`` (a key set twice: the last wins, as on most
    command lines); a ConfigError names a malformed item."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set wants KEY=VALUE (e.g. --set lr=3e-4), got {item!r}.")
        overrides[key.strip()] = parse_value(value)
    return overrides


def load_config(task: str, path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The task's defaults, then the YAML file at ``path``, then ``overrides``; validated.

    Returns a flat dict with every task key and every :class:`TrainConfig` field.
    Raises :class:`ConfigError` on an unknown task or key, a bad value, or a missing data path.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; use one of {list(TASKS)}.")
    values: dict = {}
    where = "the defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist (the course's are in configs/).")
        loaded = _load_yaml(path.read_text(), str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold one mapping of key: value, got {type(loaded).__name__}.")
        values.update(loaded)
        where = str(path)
    values.update(overrides or {})
    known = {**TASK_KEYS[task], **{k: getattr(TrainConfig(), k) for k in TRAIN_KEYS}}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} for task {task!r}.\n"
            f"  task keys: {', '.join(TASK_KEYS[task])}\n"
            f"  training keys (ftlab.train.TrainConfig): {', '.join(TRAIN_KEYS)}")
    cfg = {**known, **values}
    for key, value in cfg.items():  # YAML 1.1 reads 1e-4 (no dot) as a string; we mean the number
        if isinstance(value, str) and not isinstance(known[key], str):
            try:
                cfg[key] = float(value)
            except ValueError:
                pass
    if cfg["method"] not in METHODS:
        raise ConfigError(f"method={cfg['method']!r}; use one of {list(METHODS)}.")
    if cfg["profile"] is not None and cfg["profile"] not in PROFILES:
        raise ConfigError(f"profile={cfg['profile']!r} is not a profile; use one of {list(PROFILES)}, or null "
                          "for FTLAB_PROFILE (or the machine's default).")
    if not isinstance(cfg["overwrite"], bool):
        raise ConfigError(f"overwrite={cfg['overwrite']!r} must be true or false.")
    if cfg["target_modules"] is None:
        cfg["target_modules"] = TASK_KEYS[task]["target_modules"]
    try:  # the checks ftlab.lora makes, under the config's names
        check_alpha(cfg["alpha"], "alpha")
        check_dropout(cfg["lora_dropout"], "lora_dropout")
        if cfg["target_modules"] != "all-linear":  # peft's keyword for every linear layer but the head
            cfg["target_modules"] = list(check_targets(cfg["target_modules"], "target_modules"))
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    for key in ("r", "max_length"):
        if key == "max_length" and cfg[key] is None and task == "dpo":
            continue  # DPO's default: no truncation
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key}={cfg[key]!r} must be an int >= 1.")
    if task == "dpo":
        beta = cfg["beta"]
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ConfigError(f"beta={beta!r} must be a number > 0 (0.1 is TRL's default).")
        adapter = cfg["sft_adapter"]
        if adapter not in (None, "auto") and not (Path(adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"sft_adapter {str(adapter)!r} is not a peft adapter folder (no adapter_config.json); "
                              "use 'auto' for lesson 05's adapter if it is on disk, or null to start from the base.")
    if cfg["train_size"] is not None and (not isinstance(cfg["train_size"], int) or cfg["train_size"] < 1):
        raise ConfigError(f"train_size={cfg['train_size']!r} must be an int >= 1, or null for every row.")
    if cfg["data_path"] is not None and not Path(cfg["data_path"]).is_file():
        raise ConfigError(f"data_path {str(cfg['data_path'])!r} does not exist. It should be a .jsonl file "
                          f"with one row per line and the fields {list(DATA_COLUMNS[task])}; "
                          "or null for the course's dataset.")
    try:
        train_config(cfg)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    return cfg


def check_output_dir(cfg: dict) -> Path:
    """``cfg['output_dir']``, created and checked writable; a ConfigError if it holds files already
    (unless ``cfg['overwrite']``) or cannot be written. Runs before any model loads."""
    out = Path(cfg["output_dir"])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {str(out)!r} is a file, not a folder; pick a folder (--set output_dir=...).")
    if out.is_dir() and not cfg["overwrite"]:
        held = sorted(p.name for p in out.iterdir())
        if held:
            shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
            raise ConfigError(f"output_dir {str(out)!r} already holds files ({shown}), from an earlier run? Pick "
                              "another (--set output_dir=...), or pass --overwrite (overwrite: true) to write over it.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # unnamed on Linux: other processes see an empty folder
            pass
    except OSError as err:
        raise ConfigError(f"output_dir {str(out)!r} cannot be written ({err.strerror or err}); pick a folder "
                          "you can write to (--set output_dir=...).") from None
    return out


def train_config(cfg: dict) -> TrainConfig:
    """The :class:`TrainConfig` part of a run's config."""
    return TrainConfig(**{k: cfg[k] for k in TRAIN_KEYS})


def check_batch(cfg: dict, num_examples: int, world_size: int = 1) -> None:
    """Raise a :class:`ConfigError` when one optimizer step needs more examples than the data has.

    A step takes ``batch_size * grad_accum * world_size`` examples; fewer would give every process
    partial or repeated micro-batches, not the batch the config asks for.
    """
    need = cfg["batch_size"] * cfg["grad_accum"] * world_size
    if cfg["batch_size"] > num_examples or need > num_examples:
        raise ConfigError(
            f"batch_size={cfg['batch_size']} x grad_accum={cfg['grad_accum']} x {world_size} process(es) = "
            f"{need} examples per optimizer step, but the training data has {num_examples}. "
            "Lower batch_size or grad_accum, or use more data (train_size).")


# -- data -------------------------------------------------------------------------------------

def read_rows(task: str, cfg: dict) -> list[dict]:
    """The training rows: ``data_path`` (.jsonl) or the course's dataset for the profile."""
    columns = DATA_COLUMNS[task]
    if cfg["data_path"] is not None:
        rows = []
        try:
            f = open(cfg["data_path"])
        except OSError as err:
            raise ConfigError(f"data_path {str(cfg['data_path'])!r} cannot be read ({err.strerror}): it should "
                              f"be a .jsonl file, one JSON row per line with the fields {list(columns)}.") from None
        with f:
            for i, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise ConfigError(f"{cfg['data_path']} line {i} is not JSON ({err}).") from None
        if rows and not set(columns) <= set(rows[0]):
            raise ConfigError(f"{cfg['data_path']}: rows need the fields {list(columns)}, "
                              f"the first has {sorted(rows[0])}.")
    else:
        from ftlab import data

        loader = {"sft": data.load_instructions, "dpo": data.load_preferences}.get(task, data.load_text_classification)
        try:
            rows = list(loader("train", profile=cfg["profile"]))
        except FileNotFoundError as err:  # FTLAB_DATA naming a folder without the micro-world
            raise ConfigError(str(err)) from None
    if cfg["train_size"] is not None:
        rows = rows[:cfg["train_size"]]
    if not rows:
        raise ConfigError("the training data has no rows.")
    return rows


def _sft_examples(rows, tokenizer, max_length):
    """Tokenized prompt/response examples with the prompt masked (ftlab.sft, lesson 05), and their collator."""
    from ftlab.sft import SFTCollator, tokenize_dataset

    return tokenize_dataset(rows, tokenizer, max_length=max_length), SFTCollator(tokenizer=tokenizer)


def _sft_adapter(cfg: dict):
    """The SFT adapter folder a DPO run starts from, or None."""
    if cfg["sft_adapter"] != "auto":
        return cfg["sft_adapter"]
    from ftlab.runtime import resolve_profile
    from ftlab.sft import default_adapter_dir

    path = default_adapter_dir(resolve_profile(cfg["profile"]))
    return path if (Path(path) / "adapter_config.json").is_file() else None


def build_dpo(cfg: dict, rows: list[dict]):
    """``(model, pairs, ref_model, pad_token_id)`` for a DPO run (lesson 06's recipe)."""
    import copy

    from peft import LoraConfig, PeftModel, get_peft_model

    from ftlab.dpo import tokenize_pairs
    from ftlab.models import load_causal_lm
    from ftlab.runtime import seed_everything

    seed_everything(cfg["seed"])
    model, tokenizer = load_causal_lm(profile=cfg["profile"])
    adapter = _sft_adapter(cfg)
    if adapter is not None:  # start from the SFT model: its adapter merged into the base
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    pairs = tokenize_pairs(rows, tokenizer, max_length=cfg["max_length"])
    if cfg["method"] == "lora":  # the reference is this model with the new LoRA disabled
        targets = cfg["target_modules"]
        model = get_peft_model(model, LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["lora_dropout"],
                                                 target_modules=targets if isinstance(targets, str) else list(targets),
                                                 task_type="CAUSAL_LM"))
        return model, pairs, None, tokenizer.pad_token_id
    reference = copy.deepcopy(model).eval().requires_grad_(False)  # full fine-tuning: a frozen copy
    return model, pairs, reference, tokenizer.pad_token_id


def build(task: str, cfg: dict, rows: list[dict]):
    """``(model, train_data, collate_fn)`` for a task's rows, set up for ``cfg['method']``."""
    from peft import LoraConfig, get_peft_model

    from ftlab.runtime import seed_everything

    seed_everything(cfg["seed"])  # LoRA's A (and a new head) are drawn now: the same on every run
    targets = cfg["target_modules"]  # a list of names, or peft's "all-linear"
    lora = dict(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["lora_dropout"],
                target_modules=targets if isinstance(targets, str) else list(targets))
    if task == "sft":
        from ftlab.models import load_causal_lm

        model, tokenizer = load_causal_lm(profile=cfg["profile"])
        data, collate = _sft_examples(rows, tokenizer, cfg["max_length"])
        if cfg["method"] == "lora":
            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
        return model, data, collate

    from ftlab.models import load_text_encoder

    model, tokenizer = load_text_encoder(profile=cfg["profile"], num_labels=cfg["num_labels"], seed=cfg["seed"])
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=cfg["max_length"])
    data = [{"input_ids": ids, "attention_mask": mask, "labels": int(r["label"])}
            for ids, mask, r in zip(enc["input_ids"], enc["attention_mask"], rows)]

    def collate(batch):
        return tokenizer.pad(batch, return_tensors="pt")

    if cfg["method"] == "lora":  # the new head trains in full (modules_to_save)
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **lora))
    return model, data, collate


# -- the run ----------------------------------------------------------------------------------

def run(task: str, cfg: dict, progress: bool = True):
    """Build the task's model and data, train with :func:`ftlab.train.train`, save; return History."""
    from accelerate import PartialState

    from ftlab.runtime import device
    from ftlab.train import train

    check_output_dir(cfg)  # on every process, before any model loads: a run never ends unable to save
    # The process group under torchrun / accelerate launch (gloo on CPUs, NCCL on GPUs); one
    # process otherwise. cpu=True as train()'s Accelerator has it: without it, accelerate 1.15
    # sets up a CPU-only machine's processes as independent single-process runs.
    state = PartialState(cpu=device().type == "cpu")
    rows = read_rows(task, cfg)
    check_batch(cfg, len(rows), state.num_processes)  # before any model loads
    if task == "dpo":
        from ftlab.dpo import train_dpo

        model, data, reference, pad_id = build_dpo(cfg, rows)
    else:
        model, data, collate = build(task, cfg, rows)
    check_batch(cfg, len(data), state.num_processes)  # truncation may have dropped rows
    if state.is_main_process:
        print(f"ftlab.run {task}: {len(data)} examples, method {cfg['method']}, {state.num_processes} "
              f"process(es) x batch {cfg['batch_size']} x grad_accum {cfg['grad_accum']} = "
              f"{cfg['batch_size'] * cfg['grad_accum'] * state.num_processes} examples per step")
    log = None
    if task == "dpo":
        history, log = train_dpo(model, data, train_config(cfg), beta=cfg["beta"], ref_model=reference,
                                 pad_token_id=pad_id, progress=progress)
    else:
        history = train(model, data, train_config(cfg), collate_fn=collate, progress=progress)
    if state.is_main_process:
        out = Path(cfg["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        record = {"task": task, "config": cfg, "num_processes": state.num_processes,
                  "losses": history.losses, "history": history.to_dict()}
        if log is not None:
            record["dpo_metrics"] = log  # TRL's rewards/* per step, on the main process's pairs
        (out / "history.json").write_text(json.dumps(record, indent=1, default=str))
        model.save_pretrained(out / ("adapter" if cfg["method"] == "lora" else "model"))
        print(f"ftlab.run: losses {[round(x, 4) for x in history.losses]}")
        print(f"ftlab.run: wrote {out / 'history.json'}")
    state.wait_for_everyone()
    return history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ftlab.run", description=__doc__.split("\n\n")[0],
        epilog="Several processes: torchrun --standalone --nproc_per_node N -m ftlab.run TASK --config FILE "
               "(CPU or GPUs), or accelerate launch --num_processes N -m ftlab.run ... (GPUs)")
    parser.add_argument("task", help=f"one of {', '.join(TASKS)}")
    parser.add_argument("--config", help="a YAML file of keys (see configs/)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override config keys, e.g. --set lr=3e-4 num_steps=20")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an output_dir that already holds files (an earlier run's); without "
                             "it such a folder is refused. Nothing is deleted: files of the same name are replaced")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    args = parser.parse_args(argv)
    quiet()  # the command line is a program of ours: the same clean output as a lesson
    try:
        overrides = parse_sets(args.set)
        if args.overwrite:
            overrides["overwrite"] = True
        cfg = load_config(args.task, args.config, overrides)
        run(args.task, cfg, progress=not args.no_progress)
    except ConfigError as err:
        print(f"ftlab.run: bad config: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
