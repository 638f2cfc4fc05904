"""Lessons 05 and 06 on the full profile's language stand-ins, in a child process (offline).

Llama-3.2-1B (``ftlab.models.GATED_CAUSAL_LM``, the model lesson 05 offers besides TinyLlama) ends
a chat turn with ``<|eot_id|>`` while its EOS is ``<|end_of_text|>``, and transformers 5 leaves
``<|eot_id|>`` out of ``all_special_tokens``: before ``turn_end_ids`` looked at the added special
tokens, generation never stopped after an answer and ``tokenize_example`` warned that the response
had no EOS. These tests run the real loaders on the stand-ins (``scripts/build_standins.py``; the
rehearsal's ``build/standins/``, rebuilt first if a builder changed: the ``standins`` fixture of
tests/conftest.py) and check what lessons
05 and 06 rely on: the turn end is trained and stops generation, the labels equal TRL's, the
truncation demo holds at the full ``max_length``, and the DPO evaluations start at 50% / 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.standins

ROOT = Path(__file__).resolve().parent.parent


def _driver():
    spec = importlib.util.spec_from_file_location("build_standins", ROOT / "scripts" / "build_standins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# standins: the rehearsal's build/standins/, up to date (tests/conftest.py)


PROBE = textwrap.dedent(r'''
    import json, warnings
    import torch
    from peft import LoraConfig, get_peft_model
    from ftlab import dpo
    from ftlab.data import load_instructions, load_preferences
    from ftlab.chat import generate, turn_end_ids
    from ftlab.evals import chat_format_report
    from ftlab.models import GATED_CAUSAL_LM, load_causal_lm
    from ftlab.sft import SFTCollator, tokenize_dataset, tokenize_example, trl_records, user_turn_start

    torch.manual_seed(0)
    report = {}
    for name in (None, GATED_CAUSAL_LM):
        model, tok = load_causal_lm(name=name)
        r = {"turn_end_ids": turn_end_ids(tok), "generation_eos": model.generation_config.eos_token_id,
             "eos": tok.eos_token_id, "pad": tok.pad_token_id, "user_turn_start": user_turn_start(tok)}
        end = turn_end_ids(tok)[-1]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ex = tokenize_example("Where does Kafi live?", "Kafi lives in Daletol.", tok)
        r["warnings"] = [str(w.message) for w in caught]
        r["last_input"], r["last_trained"] = ex["input_ids"][-1], [t for t in ex["labels"] if t != -100][-1]
        r["bos_in_user_turn"] = tok(user_turn_start(tok) + "What")["input_ids"].count(tok.bos_token_id)
        # lesson 05, section 2: pad with the token that ends an answer, mask by position
        short = tokenize_example("What is 7 + 5?", "7 + 5 = 12.", tok)
        batch = SFTCollator(pad_token_id=end)([ex, short])
        r["end_labels_by_position"] = int((batch["labels"] == end).sum())
        # lesson 05, section 2: the long prompt is dropped at the full profile's max_length
        long_row = {"prompt": "Tell me everything. " * 256, "response": "No."}
        r["dropped_at_512"] = tokenize_dataset([{"prompt": "Hi", "response": "Hello."}, long_row], tok,
                                               max_length=512, verbose=False).dropped
        if name is not None:  # the labels TRL builds for the same Alpaca rows (lesson 05, section 5)
            from datasets import Dataset
            from trl import SFTConfig, SFTTrainer
            rows = list(load_instructions("train").select(range(8)))
            ours = tokenize_dataset(rows, tok, max_length=512, verbose=False)
            args = SFTConfig(output_dir="/tmp/ftlab_test_sft_standins", completion_only_loss=True, max_length=512,
                             report_to=[], shuffle_dataset=False, use_cpu=True)
            trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(trl_records(rows)),
                                 processing_class=tok)
            r["labels_equal_trl"] = ([ex["labels"] for ex in ours] == trainer.train_dataset["labels"]
                                     and [ex["input_ids"] for ex in ours] == trainer.train_dataset["input_ids"])
        # generation stops at the turn end: force the model to say it first
        hook = model.lm_head.register_forward_hook(
            lambda m, i, out: torch.full_like(out, -1e4).index_fill_(-1, torch.tensor([end]), 1e4))
        test_rows = list(load_instructions("test").select(range(4)))
        r["format"] = chat_format_report(model, tok, test_rows, max_new_tokens=8)
        r["generated"] = generate(model, tok, ["Where does Kafi live?"], max_new_tokens=8)
        hook.remove()
        # lesson 06: the evaluations on a fresh adapter, at the full max_length
        pairs = dpo.tokenize_pairs(list(load_preferences("test").select(range(4))), tok, max_length=512)
        policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"), adapter_name="dpo")
        r["accuracy_at_start"] = dpo.preference_accuracy(policy, pairs, pad_token_id=tok.pad_token_id)
        r["kl_at_start"] = dpo.kl_to_reference(policy, pairs, pad_token_id=tok.pad_token_id)
        report[name or "default"] = r
    print(json.dumps(report))
''')


@pytest.fixture(scope="module")
def probe(standins):
    env = {**os.environ, **_driver().environment(standins), "FTLAB_PROFILE": "full", "PYTHONHASHSEED": "0"}
    for key in (*_driver().OVERRIDES, "FTLAB_SIMULATE_GPU", "FTLAB_MAX_STEPS"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_llama32_ends_a_turn_with_eot_and_generation_stops_there(probe):
    r = probe["meta-llama/Llama-3.2-1B"]
    assert r["eos"] == 128001 and r["turn_end_ids"] == [128001, 128009]
    assert r["generation_eos"] == [128001, 128009]  # load_causal_lm: generate() stops at either
    assert r["format"] == {"ends": 1.0, "repeats": 0.0, "n": 4} and r["generated"] == [""]


def test_llama32_labels_train_the_turn_end_and_equal_trls(probe):
    r = probe["meta-llama/Llama-3.2-1B"]
    assert r["last_input"] == r["last_trained"] == 128009
    assert not any("no EOS" in w for w in r["warnings"])
    assert r["labels_equal_trl"]
    assert r["user_turn_start"] == "<|start_header_id|>user<|end_header_id|>\n\n" and r["bos_in_user_turn"] == 1


@pytest.mark.parametrize("name", ["default", "meta-llama/Llama-3.2-1B"])
def test_lesson05_demos_hold_at_full_scale(probe, name):
    r = probe[name]
    assert r["end_labels_by_position"] == 2  # padding demo: both answers keep their end label
    assert r["dropped_at_512"] == 1  # truncation demo at the full profile's max_length
    assert r["bos_in_user_turn"] == 1


def test_tinyllama_turn_end_is_its_eos(probe):
    r = probe["default"]  # TinyLlama gets the micro-world's template: the answer, </s>, a newline
    assert r["turn_end_ids"] == [2] and r["generation_eos"] == 2 and r["last_trained"] == 13
    assert not r["warnings"] and r["format"]["ends"] == 1.0 and r["generated"] == [""]


@pytest.mark.parametrize("name", ["default", "meta-llama/Llama-3.2-1B"])
def test_dpo_evaluations_start_at_a_tie(probe, name):
    r = probe[name]
    assert r["accuracy_at_start"] == 0.0 and r["kl_at_start"] == pytest.approx(0.0, abs=1e-6)
