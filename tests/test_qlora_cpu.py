"""QLoRA on the CPU with bitsandbytes: an inference call (generate) must not change training.

bitsandbytes 0.50 repacks 4-bit weights for its CPU inference kernel on AVX512-BF16 machines and
does not undo it for training; ftlab.models.load_causal_lm(quantization="nf4") turns that off
(``keep_bnb_cpu_training_layout``). Without it, a lesson that shows generations before training
would train on wrong gradients.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

from ftlab.chat import chat_prompt, generate
from ftlab.models import keep_bnb_cpu_training_layout, load_causal_lm
from ftlab.train import causal_lm_loss


def _loss_and_grad_norm(model, batch):
    model.train()
    model.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, batch)
    loss.backward()
    norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None))
    return loss.item(), norm.item()


def test_generate_between_training_steps_leaves_qlora_gradients_unchanged():
    model, tokenizer = load_causal_lm("tiny", quantization="nf4")
    assert all(not m.support_avx512bf16_for_cpu for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu"))
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    text = chat_prompt(tokenizer, "Where does Kafi live?") + "Kafi lives in Daletol." + tokenizer.eos_token
    batch = tokenizer([text, text], return_tensors="pt", add_special_tokens=False)
    batch["labels"] = batch["input_ids"].clone()
    before = _loss_and_grad_norm(model, batch)
    generate(model, tokenizer, ["Where does Kafi live?"], max_new_tokens=4)
    after = _loss_and_grad_norm(model, batch)
    assert before[1] > 1.0
    assert after == before  # bit for bit: same loss, same gradients


def test_keep_layout_counts_the_4bit_layers_and_leaves_others_alone():
    model, _ = load_causal_lm("tiny", quantization="nf4")
    assert keep_bnb_cpu_training_layout(model) == 7 * model.config.num_hidden_layers
    plain, _ = load_causal_lm("tiny")
    assert keep_bnb_cpu_training_layout(plain) == 0
