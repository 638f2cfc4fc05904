"""ftlab.memory: the calculator agrees with what a real training step holds.

Static parts (weights, gradients, optimizer state) must match counted tensors within 1%;
activations must match the bytes saved for backward within 10% over the configurations below
(sequence length, batch, gradient checkpointing, full vs LoRA vs QLoRA, fp32 vs bf16). The
seed's D2 must come out of it, and the real Llama-3.2-1B architecture (random weights, no
download) is quantized with bitsandbytes on the CPU and its static memory checked.
"""

from __future__ import annotations


import bitsandbytes as bnb
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ftlab import measure, memory
from ftlab.models import load_causal_lm

GB = 1e9
SMALL = LlamaConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    intermediate_size=320, vocab_size=500, tie_word_embeddings=True, head_dim=32)
SMALL._attn_implementation = "sdpa"


# -- the seed's numbers --------------------------------------------------------------------------

def test_d2_full_fine_tuning_of_7b_is_84_gb_or_112_with_master_weights():
    fp16 = memory.estimate(7e9, method="full", precision="fp16", optimizer="adamw")
    assert fp16.weights == 14 * GB and fp16.gradients == 14 * GB and fp16.optimizer == 56 * GB
    assert fp16.total == 84 * GB and fp16.activations == 0
    mixed = memory.estimate(7e9, method="full", precision="fp16", optimizer="adamw", master_weights=True)
    assert mixed.total == 112 * GB
    assert not fp16.fits("A100-40GB") and not mixed.fits("A100-80GB")


def test_d2_qlora_base_of_7b_is_3_5_gb_plus_scales_and_fits_a_t4():
    q = memory.estimate(7e9, method="qlora", precision="bf16", optimizer="adamw", trainable=0)
    assert q.weights == pytest.approx(3.5 * GB * 4.127 / 4, rel=1e-3)  # 0.5 byte + ~0.127 bit of scales
    q = memory.estimate(7e9, method="qlora", precision="bf16", optimizer="adamw")
    assert q.fits("T4") and q.trainable == int(0.005 * 7e9)


def test_lora_params_is_the_d1_formula():
    assert memory.lora_params(4096, 4096, 16) == 131_072
    assert memory.lora_params(1024, 4096, 8) == 8 * 5120
    with pytest.raises(ValueError, match=r"r=0: .*int >= 1"):
        memory.lora_params(10, 10, 0)


def test_lora_params_has_one_home_in_ftlab_lora():
    from ftlab import lora

    assert memory.lora_params is lora.lora_params


@pytest.mark.parametrize("size", [float("nan"), float("inf"), 7.5, 1.5e0, -7e9, 0, "7B", None])
def test_estimate_refuses_a_model_size_that_is_not_a_whole_positive_count(size):
    with pytest.raises(ValueError, match=r"^model=.*(whole number > 0|parameter count)"):
        memory.estimate(size, method="full")


def test_estimate_takes_a_whole_float_or_numpy_count():
    import numpy as np

    assert memory.estimate(7e9).n_params == memory.estimate(np.int64(7_000_000_000)).n_params == 7_000_000_000


@pytest.mark.parametrize("trainable", [-1, 7_000_000_001, 1.5, "100", True])
def test_estimate_refuses_trainable_below_zero_or_above_the_model(trainable):
    with pytest.raises(ValueError, match=r"^trainable=.*from 0 to the model's 7,000,000,000 parameters"):
        memory.estimate(7e9, method="lora", trainable=trainable)
    with pytest.raises(ValueError, match=r"^trainable=.*from 0 to the model's"):
        memory.estimate(SMALL, method="lora", trainable=10**12)
    assert memory.estimate(7e9, method="lora", trainable=7_000_000_000).trainable == 7_000_000_000


def test_nf4_bytes_is_what_bitsandbytes_stores():
    w = torch.randn(512, 384)
    for double in (False, True):
        packed, state = bnb.functional.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double)
        stored = packed.numel() + state.absmax.numel() * state.absmax.element_size()
        if double:
            stored += state.state2.absmax.numel() * 4 + state.state2.code.numel() * 4 + 4
        assert memory.nf4_bytes(w.numel(), double) == stored


# -- estimate vs measure ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("small_llama")
    torch.manual_seed(0)
    LlamaForCausalLM(SMALL).save_pretrained(path)
    return path


def _build(path, method, precision, checkpointing, targets, r):
    return measure.training_model(path, method, precision, r, targets or "q_proj", checkpointing)


CONFIGS = measure.VALIDATION_SETUPS


@pytest.mark.parametrize("method,precision,checkpointing,batch,seq,targets,optimizer", CONFIGS)
def test_estimate_matches_a_measured_training_step(small_dir, method, precision, checkpointing, batch, seq,
                                                   targets, optimizer):
    predicted, measured = measure.measure_setup(small_dir, method, precision, checkpointing, batch, seq, targets,
                                               optimizer)
    assert measured.activations > 0 and measured.static > 0
    for part in ("weights", "gradients", "optimizer"):
        want, got = getattr(measured, part), getattr(predicted, part)
        assert got == pytest.approx(want, rel=0.01, abs=64), f"{part}: predicted {got:,}, measured {want:,}"
    assert predicted.activations == pytest.approx(measured.activations, rel=0.10), predicted.details
    assert predicted.trainable == measured.trainable


def test_gradient_checkpointing_cuts_activations_and_the_estimate_says_by_how_much(small_dir):
    results = {}
    for ckpt in (False, True):
        model = _build(small_dir, "full", "fp32", ckpt, (), 16)
        ids = torch.randint(3, SMALL.vocab_size, (2, 128))
        m = measure.measure(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids},
                           torch.optim.SGD(model.parameters(), lr=0.0))
        e = memory.estimate(SMALL, method="full", precision="fp32", optimizer="sgd", batch_size=2, seq_len=128,
                            grad_checkpointing=ckpt)
        results[ckpt] = (m.activations, e.activations)
    assert results[True][0] < results[False][0]
    measured_ratio = results[True][0] / results[False][0]
    assert results[True][1] / results[False][1] == pytest.approx(measured_ratio, rel=0.05)


def test_estimate_matches_the_micro_world_lm():
    model, _ = load_causal_lm("tiny")
    ids = torch.randint(3, model.config.vocab_size, (4, 48))
    measured = measure.measure(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids},
                              torch.optim.AdamW(model.parameters(), lr=0.0))
    predicted = memory.estimate(model, method="full", precision="fp32", optimizer="adamw", batch_size=4, seq_len=48)
    assert predicted.static == pytest.approx(measured.static, rel=0.01)
    assert predicted.activations == pytest.approx(measured.activations, rel=0.10)


def test_the_llama_3_2_1b_architecture_quantized_on_cpu_matches_the_static_estimate():
    """Random weights in the real 1B shapes (nothing downloaded), every decoder linear quantized by
    bitsandbytes exactly as transformers does, then peft's k-bit preparation and LoRA."""
    model = measure.random_qlora_model(r=16)
    config = LlamaConfig(**measure.LLAMA_32_1B)
    counted = measure.param_bytes(model)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    predicted = memory.estimate(config, method="qlora", precision="bf16", r=16, target_modules="all-linear")
    assert predicted.trainable == n_train
    assert predicted.weights == pytest.approx(counted, rel=0.01)
    assert 1.2e9 < predicted.n_params < 1.3e9
    # the lesson's numbers: QLoRA on the 1B model, batch 4 x 512 with checkpointing, fits a T4
    run = memory.estimate(config, method="qlora", precision="fp16", optimizer="adamw8bit", r=16,
                          target_modules="all-linear", batch_size=4, seq_len=512, grad_checkpointing=True)
    assert run.fits("T4") and run.fits("L4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the device machine, or Colab)")
def test_qlora_on_the_1b_architecture_peak_matches_max_memory_allocated_on_cuda():
    """The calculator's peak against torch.cuda.max_memory_allocated for one QLoRA step of the 1B
    architecture (batch 4 x 512, checkpointing, 8-bit AdamW). Numbers are recorded in docs/memory.md."""
    torch.cuda.empty_cache()
    model = measure.random_qlora_model(r=16, device="cuda", compute_dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    ids = torch.randint(3, 128256, (4, 512), device="cuda")
    measured = measure.measure(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids},
                              bnb.optim.AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    predicted = memory.estimate(LlamaConfig(**measure.LLAMA_32_1B), method="qlora", precision="bf16",
                                optimizer="adamw8bit", r=16, target_modules="all-linear", batch_size=4, seq_len=512,
                                grad_checkpointing=True)
    peak = measured.details["max_memory_allocated"]
    print(f"predicted peak {predicted.peak / 2**30:.3f} GiB, max_memory_allocated {peak / 2**30:.3f} GiB")
    assert predicted.static == pytest.approx(measured.static, rel=0.01)
    assert predicted.peak == pytest.approx(peak, rel=0.15)


# -- errors and the table --------------------------------------------------------------------------

def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="method='sft'"):
        memory.estimate(SMALL, method="sft")
    with pytest.raises(ValueError, match="precision"):
        memory.estimate(SMALL, precision="int8")
    with pytest.raises(ValueError, match="optimizer"):
        memory.estimate(SMALL, optimizer="adam")
    with pytest.raises(ValueError, match="target_modules"):
        memory.estimate(SMALL, method="lora", target_modules=("q_lin",))
    with pytest.raises(ValueError, match="exceeds"):
        memory.estimate(SMALL, method="lora", r=256)
    with pytest.raises(ValueError, match="seq_len"):
        memory.estimate(SMALL, seq_len=0)
    with pytest.raises(ValueError, match="positive"):
        memory.estimate(-5)
    with pytest.raises(ValueError, match="Llama-family"):
        memory.estimate(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown GPU"):
        memory.estimate(SMALL).fits("K80")



@pytest.mark.parametrize("flag", ["grad_checkpointing", "master_weights", "double_quant"])
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None])
def test_switches_refuse_anything_but_a_bool(flag, value):
    # grad_checkpointing="no" used to be read as on (`if grad_checkpointing:`), silently
    with pytest.raises(ValueError, match=f"{flag}={value!r}: pass True or False"):
        memory.estimate(SMALL, method="qlora", **{flag: value})


def test_grad_checkpointing_no_is_not_read_as_on():
    off = memory.estimate(SMALL, batch_size=2, seq_len=64, grad_checkpointing=False)
    on = memory.estimate(SMALL, batch_size=2, seq_len=64, grad_checkpointing=True)
    assert on.activations < off.activations  # the two bools still mean what they say
    with pytest.raises(ValueError, match="grad_checkpointing='no'"):
        memory.estimate(SMALL, batch_size=2, seq_len=64, grad_checkpointing="no")

def test_table_and_fits():
    est = memory.estimate(SMALL, method="lora", precision="bf16", batch_size=2, seq_len=64)
    text = est.table()
    for word in ("weights", "gradients", "optimizer", "activations", "total", "T4"):
        assert word in text
    assert est.fits(10 * est.total, context=0) and not est.fits(est.total // 2, context=0)
    assert est.headroom(est.peak, context=0) == 0 and est.peak == est.total + est.transient > est.total
    assert est.total == sum(est.parts().values())


# -- bitsandbytes missing: a clear error naming the install ------------------------------------------

@pytest.fixture
def no_bitsandbytes(monkeypatch):
    """As on a runtime where only `pip install ftlab` ran: importing bitsandbytes fails."""
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` raises ImportError


@pytest.mark.parametrize("name", ["adamw8bit", "paged_adamw_8bit"])
def test_8bit_optimizer_without_bitsandbytes_names_the_install(no_bitsandbytes, name):
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ImportError, match=r"pip install 'ftlab\[quant\]'.*bitsandbytes") as info:
        measure.make_optimizer(name, params)
    assert name in str(info.value) and "optimizer='adamw'" in str(info.value)
    assert isinstance(measure.make_optimizer("adamw", params), torch.optim.AdamW)  # the rest still works


def test_qlora_set_ups_without_bitsandbytes_name_the_install(no_bitsandbytes, tmp_path):
    from ftlab.models import quantization_config

    with pytest.raises(ImportError, match=r"method='qlora'.*ftlab\[quant\]"):
        measure.training_model(tmp_path, method="qlora")
    with pytest.raises(ImportError, match=r"quantization='nf4'.*ftlab\[quant\]"):
        quantization_config("nf4")
    assert quantization_config(None) is None


def test_unknown_optimizer_is_refused_before_anything_is_imported():
    with pytest.raises(ValueError, match="optimizer='adam8'"):
        measure.make_optimizer("adam8", [torch.nn.Parameter(torch.zeros(1))])


# -- lesson 07's measured set-ups on a card: the memory plan first --------------------------------------

def test_measured_set_up_prints_its_memory_plan_on_a_card(small_dir, monkeypatch, capsys):
    monkeypatch.setenv("FTLAB_SIMULATE_GPU", "t4")
    predicted, measured = measure.measure_setup(small_dir, "lora", "fp16", True, 2, 32, ("q_proj",), "adamw")
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Memory plan:")]
    assert len(line) == 1 and "Tesla T4" in line[0] and "fp16" in line[0] and "batch 2 x 32" in line[0]
    assert measured.static == pytest.approx(predicted.static, rel=0.01)
    monkeypatch.delenv("FTLAB_SIMULATE_GPU")
    measure.measure_setup(small_dir, "lora", "fp32", False, 2, 32, ("q_proj",), "adamw")
    assert "Memory plan:" not in capsys.readouterr().out  # no card, no plan


def test_a_measured_set_up_that_cannot_fit_the_card_stops_with_the_calculators_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("FTLAB_SIMULATE_GPU", "t4")
    # Llama-3.2-1B's depth at a tiny width, named as the hub repo: the plan prices it at its real
    # 1.24B parameters, parameter by parameter (as the rehearsal's stand-ins are priced)
    narrow = LlamaConfig(hidden_size=64, num_hidden_layers=16, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=500, tie_word_embeddings=True, head_dim=16)
    LlamaForCausalLM(narrow).save_pretrained(tmp_path)
    model = measure.training_model(tmp_path, "full", "fp32")
    model.config._name_or_path = "meta-llama/Llama-3.2-1B"
    ids = torch.randint(3, narrow.vocab_size, (4, 64))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with pytest.raises(MemoryError, match="does not fit the Tesla T4.*8-bit AdamW"):
        measure._plan_step(model, batch, measure.make_optimizer("adamw", model.parameters()), "fp32")


# -- the calculator and the measuring side are two modules --------------------------------------------

def test_the_calculator_imports_without_transformers_or_the_measuring_side():
    import subprocess
    import sys

    code = ("import sys, ftlab.memory, ftlab.budget; "
            "print(sorted(m for m in ('transformers', 'peft', 'ftlab.measure', 'ftlab.train', 'ftlab.models') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_calculator_builds_nothing_it_is_arithmetic_only():
    import ast

    tree = ast.parse(open(memory.__file__).read())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    # torch, transformers, peft, bitsandbytes and the training loop belong to ftlab.measure
    assert imported <= {"__future__", "math", "numbers", "dataclasses", "warnings", "transformers",
                        "ftlab", "ftlab.lora", "ftlab.quant"}, imported
    assert "torch" not in imported and "ftlab.train" not in imported and "ftlab.models" not in imported
    for name in ("measure", "param_bytes", "training_model", "make_optimizer", "measure_setup"):
        assert name not in vars(memory)  # defined in ftlab.measure, not here


def test_budget_prices_with_the_calculators_public_functions():
    shape = memory.shape_from_config(SMALL)
    acts, terms = memory.activation_bytes(shape, "lora", 2, ("q_proj", "v_proj"), 16, 2, 64, False)
    assert acts == sum(terms.values())
    assert acts == memory.estimate(SMALL, method="lora", precision="bf16", r=16, batch_size=2, seq_len=64).activations
    assert memory.optimizer_state_bytes(1000, "adamw") == 8000
    assert memory.optimizer_state_bytes(1000, "adamw8bit") == 8000  # under bitsandbytes' 4096: 32-bit state
    assert memory.optimizer_state_bytes(8192, "adamw8bit") == 2 * 8192 + 8 * 32
    assert memory.optimizer_state_bytes(1000, "sgd") == 0


@pytest.mark.parametrize("module", ["budget", "measure", "widgets", "plots"])
def test_no_module_imports_a_private_name_of_the_calculator(module):
    import ast
    import importlib

    tree = ast.parse(open(importlib.import_module(f"ftlab.{module}").__file__).read())
    imported = [a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "ftlab.memory"
                for a in node.names]
    assert imported and not [n for n in imported if n.startswith("_")]


@pytest.mark.parametrize("name", ["measure", "param_bytes", "training_model", "make_optimizer", "measure_setup"])
def test_measuring_names_live_in_ftlab_measure_only(name):
    assert callable(getattr(measure, name))
    assert not hasattr(memory, name), name  # one home: the calculator builds and measures nothing
