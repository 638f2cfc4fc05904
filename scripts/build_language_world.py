"""Build the language micro-world: datasets, tokenizer and the pretrained tiny Llama.

    python scripts/build_language_world.py            # writes data/world/ and data/lm/

Deterministic: the world, corpus, tokenizer and weights come from fixed seeds, so a re-run on
the same library versions reproduces the artifacts. It prints the quality numbers that
data/README.md records and tests/test_language_world.py checks.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from ftlab import evals
from ftlab.data import world as W

ROOT = Path(__file__).resolve().parent.parent
SPECIALS = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
# One user turn, then the assistant's answer closed by </s>. The {% generation %} block marks
# the assistant's tokens so libraries can build an assistant-only loss mask from the template.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}{{ '\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    # Like Llama's tokenizer: plain text gets <s> in front; chat text brings its own.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", model_max_length=256, padding_side="right",
                                   additional_special_tokens=["<|user|>", "<|assistant|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for enc in tokenizer(docs)["input_ids"]:
        ids.extend(enc + [tokenizer.eos_token_id])
    return torch.tensor(ids, dtype=torch.long)


def measure(model, tokenizer, world) -> dict:
    facts = W.facts(world)
    add_train, add_test = W.addition_pairs(world)
    pairs = add_train + add_test
    q = {
        "fact_recall_all": evals.cloze_accuracy(model, tokenizer, [f["prompt"] for f in facts],
                                                [f["answer"] for f in facts]),
        "fact_recall_heldout_people": evals.cloze_accuracy(
            model, tokenizer, [f["prompt"] for f in facts if f["split"] == "heldout"],
            [f["answer"] for f in facts if f["split"] == "heldout"]),
        "addition_accuracy": evals.cloze_accuracy(
            model, tokenizer, [f"{a} + {b} =" for a, b in pairs], [f" {a + b}." for a, b in pairs]),
        "opposite_accuracy": evals.cloze_accuracy(
            model, tokenizer, [f"The opposite of {x} is" for x, _ in W.OPPOSITES],
            [f" {y}." for _, y in W.OPPOSITES]),
    }
    return {k: round(v, 4) for k, v in q.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data")
    ap.add_argument("--max-steps", type=int, default=1200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()

    world = W.make_world()
    out_world, out_lm = args.out / "world", args.out / "lm"
    write_jsonl(out_world / "facts.jsonl", W.facts(world))
    for split in ("train", "test"):
        write_jsonl(out_world / f"instructions_{split}.jsonl", W.instructions(world, split))
        write_jsonl(out_world / f"preferences_{split}.jsonl", W.preferences(world, split))

    # The tokenizer sees the whole language of the world (questions included), like a real
    # tokenizer trained on a broad corpus; the LM itself never sees a question.
    extra = [r["prompt"] + " " + r["response"] for s in ("train", "test") for r in W.instructions(world, s)]
    extra += [r["chosen"] + " " + r["rejected"] for s in ("train", "test") for r in W.preferences(world, s)]
    corpus = W.pretraining_corpus(world, num_docs=40000, seed=0)
    tokenizer = build_tokenizer(corpus[:4000] + extra + list(W.REFUSALS), vocab_size=768)

    random.seed(0)
    torch.manual_seed(0)
    stream = token_stream(tokenizer, corpus)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, rope_theta=10000.0, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {len(tokenizer)}, {len(stream):,} tokens, model {n_params:,} parameters")

    seq, batch, peak_lr, warmup = 128, 32, 3e-3, 100
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, weight_decay=0.01, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    model.train()
    for step in range(1, args.max_steps + 1):
        lr = peak_lr * min(step / warmup, 0.5 * (1 + math.cos(math.pi * step / args.max_steps)) * 0.9 + 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(stream) - seq - 1, (batch,), generator=gen)
        x = torch.stack([stream[s:s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == args.max_steps:
            q = measure(model, tokenizer, world)
            print(f"step {step:5d}  loss {loss.item():.3f}  lr {lr:.1e}  {q}  {time.time() - t0:.0f}s", flush=True)
            model.train()

    model.eval()
    quality = measure(model, tokenizer, world)
    quality["instruction_exact_match_before_sft"] = round(
        evals.exact_match(model, tokenizer, W_rows(out_world / "instructions_test.jsonl")), 4)
    quality.update(parameters=n_params, train_steps=args.max_steps, tokens_seen=args.max_steps * batch * seq,
                   seconds=round(time.time() - t0))
    model.save_pretrained(out_lm, safe_serialization=True)
    tokenizer.save_pretrained(out_lm)
    # Name the class every transformers release knows (5.x writes its new "TokenizersBackend"),
    # and store the chat markers as "additional_special_tokens" (5.x writes a list under
    # "extra_special_tokens", which 4.x cannot read; 5.x reads both): one file for 4.x and 5.x.
    cfg_path = out_lm / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tok_cfg.get("extra_special_tokens"), list):
        tok_cfg["additional_special_tokens"] = tok_cfg.pop("extra_special_tokens")
    cfg_path.write_text(json.dumps(dict(sorted(tok_cfg.items())), indent=2) + "\n")
    (out_lm / "quality.json").write_text(json.dumps(quality, indent=2) + "\n")
    print(json.dumps(quality, indent=2))


def W_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


if __name__ == "__main__":
    main()
