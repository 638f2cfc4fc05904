"""Reference scores of the capstone's tiny tasks: the floor, and one quick method each (CPU, ~1 minute).

    FTLAB_PROFILE=tiny python scripts/task_baselines.py

Every score is the grader's own: each method writes a submission file and ``ftlab.grade.score``
reads it. Printed as a table (the numbers in data/tasks/README.md come from it):

- the template (``python -m ftlab.grade TASK --template FILE``): one constant prediction;
- ``fewshot_images``: a logistic-regression probe on the frozen micro-world CNN's features, and
  the same probe on the same CNN with random weights (what pretraining is worth);
- ``short_answers``: the tiny Llama asked zero-shot (it answers with a sentence; the last word
  is taken), then after LoRA (peft, r=8 on q/k/v/o, 10 epochs) trained on the 400 train rows
  with the prompt masked.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftlab import grade  # noqa: E402
from ftlab.tasks import load_task  # noqa: E402

EPOCHS = 10


def submit(task: str, ids, predictions, folder: Path) -> float:
    path = folder / f"{task}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "prediction"])
        writer.writerows(zip(ids, predictions))
    return grade.score(task, path, "tiny")


def images_probe(folder: Path, pretrained: bool) -> float:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ftlab.data.shapes import normalize
    from ftlab.models.vision import backbone_features, load_vision_backbone

    ds = load_task("fewshot_images", "tiny")
    net = load_vision_backbone("tiny", pretrained=pretrained)

    def feats(split):
        pixels = torch.stack([torch.from_numpy(np.asarray(im)).permute(2, 0, 1) for im in ds[split]["image"]])
        return backbone_features(net, normalize(pixels)).numpy()

    probe = LogisticRegression(max_iter=2000, C=1.0).fit(feats("train"), ds["train"]["label"])
    names = ds["train"].features["label"].names
    return submit("fewshot_images", ds["test"]["id"], [names[k] for k in probe.predict(feats("test"))], folder)


def prompt(row) -> str:
    # The answer follows "Answer:" after a space: the tiny LM met every value as " value" in its
    # pretraining sentences; a value at the start of a line is a token sequence it rarely saw.
    return f"{row['context']}\nQuestion: {row['question']}\nAnswer:"


@torch.no_grad()
def answers(model, tok, rows, prompt=prompt, max_new_tokens: int = 6) -> list[str]:
    model.eval()
    out = []
    for row in rows:
        enc = tok(prompt(row), return_tensors="pt")
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append(text.strip().split("\n")[0])
    return out


def last_word(sentence: str) -> str:
    words = sentence.rstrip(".").split()
    return words[-1] if words else ""


def short_answers_lora(folder: Path, epochs: int = EPOCHS) -> tuple[float, float]:
    from peft import LoraConfig, get_peft_model

    from ftlab.models import load_causal_lm

    torch.manual_seed(0)
    ds = load_task("short_answers", "tiny")
    model, tok = load_causal_lm(profile="tiny")
    # Zero-shot, the pretraining's FAQ format ("Answer:" then a line): it answers with a sentence
    # about someone; its last word is the guess.
    faq = lambda row: prompt(row) + "\n"  # noqa: E731
    said = answers(model, tok, ds["test"], faq, max_new_tokens=12)
    zero_shot = submit("short_answers", ds["test"]["id"], [last_word(s) for s in said], folder)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    examples = []
    for row in ds["train"]:
        p = tok(prompt(row), add_special_tokens=False)["input_ids"]
        a = tok(" " + row["answer"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        examples.append((p + a, [-100] * len(p) + a))  # the loss on the answer only
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(examples)).tolist()
        for start in range(0, len(order), 16):
            batch = [examples[i] for i in order[start:start + 16]]
            width = max(len(ids) for ids, _ in batch)
            ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x, _ in batch])
            labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
    return zero_shot, submit("short_answers", ds["test"]["id"], answers(model, tok, ds["test"]), folder)


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = []
        for task in ("fewshot_images", "short_answers"):
            grade.write_template(task, folder / "t.csv", "tiny")
            rows.append((task, "template (one constant prediction)", grade.score(task, folder / "t.csv", "tiny"), 0.0))
        for pretrained in (True, False):
            t0 = time.perf_counter()
            what = "logistic probe, frozen CNN, " + ("pretrained" if pretrained else "random weights")
            rows.append(("fewshot_images", what, images_probe(folder, pretrained), time.perf_counter() - t0))
        t0 = time.perf_counter()
        zero, lora = short_answers_lora(folder)
        took = time.perf_counter() - t0
        rows.append(("short_answers", "tiny Llama zero-shot, last word of its sentence", zero, 0.0))
        rows.append(("short_answers", f"tiny Llama + LoRA r=8 (q,k,v,o), {EPOCHS} epochs, answer-only loss (zero-shot included)",
                     lora, took))
    print("| task | method | score | seconds |\n|---|---|---:|---:|")
    for task, what, value, seconds in rows:
        print(f"| {task} | {what} | {value:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
