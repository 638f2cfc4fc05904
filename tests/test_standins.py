"""The language stand-ins (scripts/build_standins.py, scripts/standins_lm.py) load offline.

The stand-ins are built once per session into a temporary folder. The loading checks run in a
child process whose environment points at them (HF_HOME, HF_HUB_OFFLINE, ...): huggingface_hub
and datasets read those variables once, at import, so setting them in this already-importing
test process would not reliably reach the libraries. The child runs the course's real calls
(``from_pretrained(repo_id)``, ``load_dataset(repo_id, split=...)``, ``ftlab.models.load_causal_lm``)
and reports values as JSON; the tests assert on them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Built and loaded by `make rehearse` (CI runs it), not `make test`: see tests/conftest.py.
pytestmark = pytest.mark.standins

ROOT = Path(__file__).resolve().parent.parent
TINYLLAMA, LLAMA32 = "TinyLlama/TinyLlama_v1.1", "meta-llama/Llama-3.2-1B"
ALPACA, ULTRAFEEDBACK = "yahma/alpaca-cleaned", "trl-lib/ultrafeedback_binarized"


def _driver():
    spec = importlib.util.spec_from_file_location("build_standins", ROOT / "scripts" / "build_standins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(root: Path) -> dict[str, str]:
    """sha256 of every file the build writes (lock files and datasets' map caches excluded)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".lock" and not p.name.startswith("cache-")}


@pytest.fixture(scope="session")
def standins(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    _driver().main(["--out", str(out), "--only", "lm"])
    return out


# What the child process reports. Everything it prints before the last line is ignored.
PROBE = textwrap.dedent(r'''
    import json
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    TEXTS = ["Explain the water cycle to a beginner.", "Give 3 tips.\n\n1. Sleep well; don't worry!",
             "Müller's café costs 3.50€."]
    report = {}
    for repo in ("TinyLlama/TinyLlama_v1.1", "meta-llama/Llama-3.2-1B"):
        tok = AutoTokenizer.from_pretrained(repo)
        model = AutoModelForCausalLM.from_pretrained(repo)
        cfg = model.config
        names = ["<unk>", "<s>", "</s>", "<0x0A>", "<|begin_of_text|>", "<|end_of_text|>",
                 "<|finetune_right_pad_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
                 "<|eot_id|>", "<|python_tag|>", "<|reserved_special_token_247|>"]
        r = {
            "class": type(model).__name__, "dtype": str(model.dtype), "layers": len(model.model.layers),
            "config": {k: getattr(cfg, k, None) for k in (
                "num_hidden_layers", "vocab_size", "hidden_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps",
                "tie_word_embeddings", "bos_token_id", "eos_token_id")},
            "rope": cfg.rope_parameters,
            "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
            "generation_eos": model.generation_config.eos_token_id,
            "len": len(tok), "tokenizer_class": type(tok).__name__,
            "bos": [tok.bos_token, tok.bos_token_id], "eos": [tok.eos_token, tok.eos_token_id],
            "unk": [tok.unk_token, tok.unk_token_id], "pad": tok.pad_token,
            "ids": {n: tok.convert_tokens_to_ids(n) for n in names},
            "chat_template": tok.chat_template,
            "encoded": [tok(t)["input_ids"] for t in TEXTS],
            "roundtrip": [tok.decode(tok(t)["input_ids"], skip_special_tokens=True) == t for t in TEXTS],
            "eos_in_text": tok("Done." + tok.eos_token)["input_ids"][-1],
            "newline": tok("a\nb", add_special_tokens=False)["input_ids"],
            "dtypes": {},
        }
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            m = AutoModelForCausalLM.from_pretrained(repo, dtype=dtype)
            with torch.no_grad():
                logits = m(torch.tensor([r["encoded"][0]])).logits
            r["dtypes"][str(dtype)] = [str(m.dtype), list(logits.shape), bool(torch.isfinite(logits).all())]
        if tok.chat_template:
            turns = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]
            r["chat"] = tok.apply_chat_template(turns, tokenize=False)
            r["chat_prompt"] = tok.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True)
        report[repo] = r

    for repo, splits in (("yahma/alpaca-cleaned", ["train"]), ("trl-lib/ultrafeedback_binarized", ["train", "test"])):
        for split in splits:
            ds = load_dataset(repo, split=split)
            report[f"{repo}:{split}"] = {"type": type(ds).__name__, "rows": len(ds),
                                         "features": {k: repr(v) for k, v in ds.features.items()},
                                         "first": ds[0], "column": {c: ds[c][:50] for c in ds.column_names
                                                                    if c in ("input", "score_chosen", "score_rejected")}}

    from ftlab.data import load_instructions, load_preferences
    from ftlab.models import load_causal_lm

    model, tok = load_causal_lm()
    report["ftlab"] = {"class": type(model).__name__, "layers": len(model.model.layers), "len": len(tok),
                       "pad": tok.pad_token, "instructions": [len(load_instructions(s)) for s in ("train", "test")],
                       "preferences": load_preferences("test").column_names}
    print(json.dumps(report))
''')


@pytest.fixture(scope="session")
def probe(standins):
    env = {**os.environ, **_driver().environment(standins), "FTLAB_PROFILE": "full", "PYTHONHASHSEED": "0"}
    for key in _driver().OVERRIDES:
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_tinyllama_model_keeps_depth_vocab_and_config(probe):
    r = probe[TINYLLAMA]
    assert r["class"] == "LlamaForCausalLM" and r["layers"] == 22
    assert r["config"] == {"num_hidden_layers": 22, "vocab_size": 32000, "hidden_size": 64,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                           "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                           "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
    assert r["rope"]["rope_theta"] == 10000.0 and not r["tied"]
    assert r["dtype"] == "torch.float32" and r["generation_eos"] == 2


def test_tinyllama_tokenizer_has_llama_conventions(probe):
    r = probe[TINYLLAMA]
    assert r["len"] == 32000 and r["tokenizer_class"] == "LlamaTokenizer"
    assert r["unk"] == ["<unk>", 0] and r["bos"] == ["<s>", 1] and r["eos"] == ["</s>", 2]
    assert r["pad"] is None and r["chat_template"] is None
    assert r["ids"]["<unk>"] == 0 and r["ids"]["<0x0A>"] == 13  # byte pieces at 3..258, "\n" = 0x0A
    assert all(ids[0] == 1 and 1 not in ids[1:] and max(ids) < 32000 for ids in r["encoded"])  # <s> first, once
    assert all(r["roundtrip"])
    assert r["eos_in_text"] == 2  # "</s>" written in text is the EOS token
    assert 13 in r["newline"]  # a newline is the byte piece, as in Llama
    # English is tokenized into words, not letters: about one token per word here.
    assert len(r["encoded"][0]) <= 10


def test_llama32_model_keeps_depth_vocab_rope_and_tying(probe):
    r = probe[LLAMA32]
    assert r["class"] == "LlamaForCausalLM" and r["layers"] == 16
    c = r["config"]
    assert (c["num_hidden_layers"], c["vocab_size"], c["tie_word_embeddings"]) == (16, 128256, True)
    assert c["num_attention_heads"] // c["num_key_value_heads"] == 4  # Llama-3.2-1B's GQA ratio (32 / 8)
    assert (c["max_position_embeddings"], c["bos_token_id"], c["eos_token_id"]) == (131072, 128000, 128001)
    assert r["rope"]["rope_type"] == "llama3" and r["rope"]["rope_theta"] == 500000.0
    assert (r["rope"]["factor"], r["rope"]["original_max_position_embeddings"]) == (32.0, 8192)
    assert r["tied"] and r["dtype"] == "torch.bfloat16"
    assert r["generation_eos"] == 128001  # the base model's EOS, not <|eot_id|>


def test_llama32_tokenizer_special_ids_and_chat_template_trap(probe):
    r = probe[LLAMA32]
    assert r["len"] == 128256
    ids = r["ids"]
    assert (ids["<|begin_of_text|>"], ids["<|end_of_text|>"], ids["<|eot_id|>"]) == (128000, 128001, 128009)
    assert (ids["<|start_header_id|>"], ids["<|end_header_id|>"]) == (128006, 128007)
    assert (ids["<|finetune_right_pad_id|>"], ids["<|eom_id|>"], ids["<|python_tag|>"]) == (128004, 128008, 128010)
    assert ids["<|reserved_special_token_247|>"] == 128255
    assert r["bos"] == ["<|begin_of_text|>", 128000] and r["eos"] == ["<|end_of_text|>", 128001]
    assert r["pad"] is None and r["chat_template"]
    assert all(e[0] == 128000 and max(e[1:]) < 128000 for e in r["encoded"]) and all(r["roundtrip"])
    assert r["chat"] == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                         "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")
    assert r["chat_prompt"].endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    # The real trap: a turn ends with <|eot_id|>, while eos_token is <|end_of_text|>.
    assert r["chat"].endswith("<|eot_id|>") and r["eos"][0] not in r["chat"]


@pytest.mark.parametrize("repo", [TINYLLAMA, LLAMA32])
def test_models_load_in_every_dtype(probe, repo):
    vocab = probe[repo]["config"]["vocab_size"]
    for dtype, (got, shape, finite) in probe[repo]["dtypes"].items():
        assert got == dtype and shape[-1] == vocab and finite


def test_alpaca_schema_and_rows(probe):
    r = probe[f"{ALPACA}:train"]
    assert r["type"] == "Dataset" and r["rows"] == 1500
    assert r["features"] == {c: "Value('string')" for c in ("output", "input", "instruction")}
    empty = sum(x == "" for x in r["column"]["input"])
    assert 10 <= empty < 50  # "input" is often empty, not always
    assert r["first"]["instruction"] and r["first"]["output"]


@pytest.mark.parametrize("split, rows", [("train", 400), ("test", 200)])
def test_ultrafeedback_schema_and_rows(probe, split, rows):
    r = probe[f"{ULTRAFEEDBACK}:{split}"]
    assert r["type"] == "Dataset" and r["rows"] == rows
    turns = "List({'content': Value('string'), 'role': Value('string')})"
    assert r["features"] == {"chosen": turns, "rejected": turns, "score_chosen": "Value('float64')",
                             "score_rejected": "Value('float64')"}
    first = r["first"]
    assert [t["role"] for t in first["chosen"]] == ["user", "assistant"] == [t["role"] for t in first["rejected"]]
    assert first["chosen"][0] == first["rejected"][0]  # the same prompt
    assert all(c > w for c, w in zip(r["column"]["score_chosen"], r["column"]["score_rejected"]))


def test_ftlab_full_profile_loads_the_standins(probe):
    r = probe["ftlab"]
    assert r["class"] == "LlamaForCausalLM" and r["layers"] == 22 and r["len"] == 32000
    assert r["pad"] == "</s>"  # load_causal_lm pads with EOS, as for the real TinyLlama
    assert r["instructions"] == [1000, 200]
    assert set(r["preferences"]) >= {"prompt", "chosen", "rejected"}


def test_manifest_and_env(standins):
    manifest = json.loads((standins / "manifest.json").read_text())
    entries = manifest["standins"]
    assert set(entries) >= {TINYLLAMA, LLAMA32, ALPACA, ULTRAFEEDBACK}
    tl = entries[TINYLLAMA]
    assert tl["real"]["hidden_size"] == 2048 and tl["standin"]["hidden_size"] == 64
    assert tl["real"]["num_hidden_layers"] == tl["standin"]["num_hidden_layers"] == 22
    assert entries[ULTRAFEEDBACK]["rows"] == {"train": 400, "test": 200}
    assert (standins / entries[LLAMA32]["path"] / "model.safetensors").is_file()
    env = (standins / "env.sh").read_text()
    for line in ('export HF_HOME="$_standins/hf"', 'export TORCH_HOME="$_standins/torch"',
                 'export FTLAB_CACHE="$_standins/cache"', "export HF_HUB_OFFLINE=1",
                 "export HF_DATASETS_OFFLINE=1", "export TRANSFORMERS_OFFLINE=1"):
        assert line in env
    sourced = subprocess.run(["bash", "-c", f"source {standins / 'env.sh'} && echo $HF_HOME"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert Path(sourced) == (standins / "hf").resolve()


def test_rebuild_is_idempotent(standins, probe):
    """Building again over the folder (after it has been used) writes the same bytes."""
    before = _digest(standins)
    _driver().main(["--out", str(standins), "--only", "lm"])
    assert _digest(standins) == before
