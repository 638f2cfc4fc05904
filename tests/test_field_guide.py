"""docs/field_guide.md holds together: every lesson and the README link it, its flowchart parses,
its symptom table covers issue 15's symptoms, its worked memory examples are the calculator's
numbers, and the defaults it credits to a lesson are that lesson's config.

Each check is a function that returns a list of problems, proved to catch what it is for on an
edited copy of the guide.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import jupytext
import pytest

import ftlab
from ftlab import memory
from ftlab.train import TrainConfig

from lesson_cells import load_script

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "field_guide.md"
NOTEBOOKS = ROOT / "notebooks"


badges = load_script("badges")
numbers = load_script("field_guide_numbers")


def guide_url(repo_url: str = ftlab.REPO_URL) -> str:
    """The guide on GitHub, from REPO_URL as the Colab badges are built: a link that works on Colab."""
    return f"{badges.git_url(repo_url)}/blob/main/docs/field_guide.md"


def guide_text() -> str:
    return GUIDE.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under the ``## ...`` heading that starts with ``heading``, up to the next ``## ``."""
    m = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"the guide has no '## {heading}' section"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first markdown table in ``text``, as lists of stripped cells."""
    rows, seen_rule = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            if seen_rule:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            seen_rule = True
        elif seen_rule:
            rows.append(cells)
    return rows


# --- links ---------------------------------------------------------------------------------------


def test_guide_url_is_built_from_repo_url():
    assert guide_url("https://github.com/someone/fork") == "https://github.com/someone/fork/blob/main/docs/field_guide.md"
    assert guide_url() == "https://github.com/ftlab-course/ftlab/blob/main/docs/field_guide.md"


def last_cell_problems(path: Path, url: str) -> list[str]:
    """The lesson's last cell is its markdown Summary, and it links the guide at ``url``."""
    nb = jupytext.read(path, fmt="ipynb" if path.suffix == ".ipynb" else "py:percent")
    last = nb.cells[-1]
    if last.cell_type != "markdown" or "## Summary" not in last.source:
        return [f"{path.name}: the last cell is not the '## Summary' markdown cell"]
    if f"]({url})" not in last.source:
        return [f"{path.name}: the Summary does not link the field guide as a markdown link to {url}"]
    return []


@pytest.mark.parametrize("stem", badges.notebook_stems(NOTEBOOKS))
def test_every_lesson_summary_links_the_guide(stem):
    for suffix in (".py", ".ipynb"):
        assert last_cell_problems(NOTEBOOKS / f"{stem}{suffix}", guide_url()) == []


def test_last_cell_check_catches_a_missing_or_foreign_link(tmp_path):
    path = tmp_path / "00_x.py"
    path.write_text("# %% [markdown]\n# # Title\n\n# %% [markdown]\n# ## Summary\n# - one\n", encoding="utf-8")
    assert "does not link" in last_cell_problems(path, guide_url())[0]
    path.write_text(path.read_text() + f"#\n# [guide]({guide_url('https://github.com/o/r')})\n", encoding="utf-8")
    assert last_cell_problems(path, guide_url()) != []
    assert last_cell_problems(path, guide_url("https://github.com/o/r")) == []


def test_readme_links_the_guide_near_the_top_and_in_what_is_where():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    top = readme.split("## Lessons", 1)[0]
    assert "](docs/field_guide.md)" in top
    assert "](docs/field_guide.md)" in section(readme, "What is where")


# --- the flowchart -------------------------------------------------------------------------------

NODE_RE = re.compile(r"\b([A-Za-z_]\w*)\s*(\[\[|\(\[|\[|\{\{|\{|\(\(|\()\s*\"")  # id["..."], id{"..."}, ...
EDGE_RE = re.compile(r"^\s*([A-Za-z_]\w*)\b.*?(?:-->|==>|-\.->)\s*([A-Za-z_]\w*)\b")


def mermaid_blocks(text: str) -> list[str]:
    return re.findall(r"^```mermaid\n(.*?)^```", text, re.M | re.S)


def mermaid_problems(block: str) -> list[str]:
    """A flowchart header; every edge's two ends are nodes defined with a labelled shape; every
    defined node is on an edge."""
    lines = [line for line in block.splitlines() if line.strip() and not line.strip().startswith("%%")]
    if not lines or not re.match(r"(flowchart|graph)\s+(TD|TB|BT|LR|RL)\b", lines[0].strip()):
        return [f"the block starts with {lines[0].strip() if lines else '(nothing)'!r}, not 'flowchart TD' or 'graph LR'"]
    defined, used, problems = set(), set(), []
    for line in lines[1:]:
        # drop labels inside quotes so their words are not read as ids
        bare = re.sub(r'"[^"]*"', '""', line)
        defined.update(NODE_RE.findall(line) and [m[0] for m in NODE_RE.findall(line)])
        edge = EDGE_RE.match(bare)
        if not edge:
            problems.append(f"line {line.strip()!r} is not an edge 'a --> b' or 'a -- \"label\" --> b'")
            continue
        used.update(edge.groups())
    problems += [f"node {n!r} is used on an edge but never defined with a label" for n in sorted(used - defined)]
    problems += [f"node {n!r} is defined but on no edge" for n in sorted(defined - used)]
    return problems


def test_the_guide_has_one_flowchart_and_it_parses():
    blocks = mermaid_blocks(guide_text())
    assert len(blocks) == 1
    assert mermaid_problems(blocks[0]) == []
    assert len(NODE_RE.findall(blocks[0])) >= 10  # a real decision chart, not a stub


def test_mermaid_check_catches_a_bad_header_and_an_undefined_node():
    good = 'flowchart TD\n    a["A"] --> b{"B?"}\n    b -- "yes" --> c["C"]\n'
    assert mermaid_problems(good) == []
    assert "not 'flowchart TD'" in mermaid_problems(good.replace("flowchart TD", "flow TD"))[0]
    assert mermaid_problems(good + "    c --> d\n") == ["node 'd' is used on an edge but never defined with a label"]
    assert "defined but on no edge" in mermaid_problems(good + '    e["E"]\n')[-1]


# --- the symptom table ---------------------------------------------------------------------------

# issue 15's symptoms, each with a pattern its row's first cell must match
SYMPTOMS = {
    "OOM": r"out of memory|\bOOM\b",
    "NaN": r"\bNaN\b",
    "a flat loss": r"flat loss",
    "a loss that spikes": r"spike",
    "fp16 on a T4": r"fp16 on a T4",
    "emulated bf16": r"emulated.*bf16",
    "generation that never stops": r"never stops",
    "all labels masked": r"all labels masked",
    "a Colab disconnect": r"Colab disconnect",
}


def symptom_problems(text: str) -> list[str]:
    """One row per symptom, each with a cause and a fix of some substance."""
    rows = table_rows(section(text, "4. When it goes wrong"))
    problems = []
    for name, pattern in SYMPTOMS.items():
        hits = [r for r in rows if re.search(pattern, r[0], re.I)]
        if len(hits) != 1:
            problems.append(f"{len(hits)} rows for the symptom {name!r} (want exactly 1)")
        elif len(hits[0]) != 3 or min(len(c) for c in hits[0][1:]) < 40:
            problems.append(f"the row for {name!r} lacks a cause or a fix: {hits[0]}")
    return problems


def test_symptom_table_covers_every_symptom_of_the_issue():
    assert symptom_problems(guide_text()) == []


def test_symptom_check_catches_a_missing_row():
    text = guide_text()
    row = next(line for line in text.splitlines() if line.startswith("| **Colab disconnect**"))
    assert symptom_problems(text.replace(row + "\n", "")) == ["0 rows for the symptom 'a Colab disconnect' (want exactly 1)"]


def test_symptom_fixes_name_what_ftlab_does():
    rows = {r[0]: r for r in table_rows(section(guide_text(), "4. When it goes wrong"))}
    by = {name: next(r for k, r in rows.items() if re.search(p, k, re.I)) for name, p in SYMPTOMS.items()}
    assert "amp_dtype" in by["emulated bf16"][2] and "8.0" in by["emulated bf16"][2]
    assert "GradScaler" in by["fp16 on a T4"][2] and "7.5" in by["fp16 on a T4"][1]
    assert "tokenize_dataset" in by["all labels masked"][2] and "keeps the start" in by["all labels masked"][1]
    assert "resume=True" in by["a Colab disconnect"][2] and "Drive" in by["a Colab disconnect"][2]
    assert "EOS" in by["generation that never stops"][1]


# --- the worked memory examples ------------------------------------------------------------------

WORKED_COLUMNS = ("weights", "gradients", "optimizer", "activations", "total", "peak")


def worked_block(text: str) -> str:
    start, end = text.find(numbers.START), text.find(numbers.END)
    assert 0 <= start < end, "the guide has no worked-examples block"
    return text[start:end]


def worked_problems(text: str) -> list[str]:
    """Every number of the worked table equals ftlab.memory.estimate for the set-up the block
    states (model, lesson 07's recipe, batch x tokens, checkpointing), to the 2 decimals shown."""
    block = worked_block(text)
    m = re.search(r"Batch (\d+) x (\d+) tokens, gradient checkpointing (on|off)", block)
    if not m:
        return ["the worked block does not say its batch, tokens and checkpointing"]
    batch, seq, ckpt = int(m.group(1)), int(m.group(2)), m.group(3) == "on"
    rows, problems = table_rows(block), []
    header = ["model", "recipe", "trainable", *WORKED_COLUMNS, "T4", "L4"]
    seen = set()
    for row in rows:
        if len(row) != len(header):
            problems.append(f"row {row} has {len(row)} cells, want {len(header)}")
            continue
        cells = dict(zip(header, row))
        model, recipe = cells["model"], cells["recipe"]
        seen.add((model, recipe))
        est = memory.estimate(memory.known_config(model), batch_size=batch, seq_len=seq,
                              grad_checkpointing=ckpt, **memory.RECIPES[recipe])
        if cells["trainable"] != f"{est.trainable:,}":
            problems.append(f"{model} {recipe}: trainable {cells['trainable']}, calculator {est.trainable:,}")
        for col in WORKED_COLUMNS:
            want = round(getattr(est, col) / memory.GiB, 2)
            if float(cells[col]) != want:
                problems.append(f"{model} {recipe}: {col} {cells[col]} GiB, calculator {want:.2f}")
        for card in ("T4", "L4"):
            if (cells[card] == "fits") != est.fits(card):
                problems.append(f"{model} {recipe}: {card} says {cells[card]!r}, calculator fits={est.fits(card)}")
    want_rows = {(m_, r) for m_ in ("Llama-3.2-1B", "Llama-2-7B") for r in memory.RECIPES}
    if seen != want_rows:
        problems.append(f"worked rows {sorted(seen)}, want a 1B and a 7B example for each recipe")
    return problems


def test_worked_memory_examples_equal_the_calculator():
    assert worked_problems(guide_text()) == []


def test_worked_check_catches_an_edited_number():
    text = guide_text()
    row = next(line for line in worked_block(text).splitlines() if line.startswith("| Llama-2-7B | qlora |"))
    cells = row.strip("|").split("|")
    total, t4 = cells[7].strip(), cells[9].strip()  # model, recipe, trainable, 4 parts, total, peak, T4
    bumped = f"{float(total) + 0.01:.2f}"
    cells[7] = f" {bumped} "
    assert worked_problems(text.replace(row, "|" + "|".join(cells) + "|")) == [
        f"Llama-2-7B qlora: total {bumped} GiB, calculator {total}"]
    cells[7], cells[9] = f" {total} ", " no " if t4 == "fits" else " fits "
    assert worked_problems(text.replace(row, "|" + "|".join(cells) + "|")) == [
        f"Llama-2-7B qlora: T4 says {cells[9].strip()!r}, calculator fits={t4 == 'fits'}"]


def test_worked_block_is_what_the_script_writes():
    """The by-hand lines are the script's arithmetic too: an edit anywhere in the block fails."""
    assert numbers.replaced(guide_text()) == guide_text(), \
        "run `python scripts/field_guide_numbers.py --write`"
    assert numbers.main(["--check"]) == 0


def test_by_hand_rules_land_on_the_calculator():
    """Section 3's per-parameter rules give the worked table's static parts."""
    one = memory.known_config("Llama-3.2-1B")
    n = memory.shape_from_config(one).n_params
    full = memory.estimate(one, batch_size=4, seq_len=512, **memory.RECIPES["full"])
    assert full.static == 16 * n
    lora = memory.estimate(one, batch_size=4, seq_len=512, **memory.RECIPES["lora"])
    assert lora.static == 2 * n + 16 * lora.trainable
    assert memory.estimate(7e9, method="full", precision="fp16").total == 84e9
    # per token and layer, 16-bit full FT: 2 x (2q + 2kv + 4ff) + 16d, within 1% of the calculator
    s = memory.shape_from_config(one)
    rule = 2 * (2 * s.q_dim + 2 * s.kv_dim + 4 * s.intermediate) + 16 * s.hidden
    layers = memory.estimate(one, method="full", precision="bf16", batch_size=1, seq_len=512).details["layers"]
    assert rule == pytest.approx(layers / 512 / s.layers, rel=0.01)
    assert "2 x (2 q + 2 kv + 4 ff) + 16 d bytes" in guide_text().replace("\n", " ")
    assert memory.estimate(7e9, method="full", precision="fp16", master_weights=True).total == 112e9


# --- the defaults table --------------------------------------------------------------------------


def lesson_config(stem: str, profile: str = "full") -> dict:
    """A lesson's Config as the profile builds it: the dataclass defaults, overridden by the
    keywords of ``cfg = Config(...)`` under ``if profile() == "full":`` (read with ast, not run)."""
    tree = ast.parse((NOTEBOOKS / f"{stem}.py").read_text(encoding="utf-8"))
    values = {}
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    for item in cls.body:
        if isinstance(item, ast.AnnAssign) and item.value is not None:
            try:
                values[item.target.id] = ast.literal_eval(item.value)
            except ValueError:
                pass  # field(default_factory=...): not a default the guide quotes
    if profile == "full":
        branch = next(n for n in tree.body if isinstance(n, ast.If) and "profile()" in ast.unparse(n.test)
                      and "full" in ast.unparse(n.test))
        call = next(n.value for n in branch.body if isinstance(n, ast.Assign))
        for kw in call.keywords:
            try:
                values[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                pass
    return values


# guide row -> (lesson, {what the guide states: the Config field, or a function of the Config})
LESSON_ROWS = {
    "linear probe (vision)": ("01_linear_probe", {"lr": "head_lr", "epochs": "head_epochs"}),
    "partial FT (vision)": ("01_linear_probe", {"lr": "backbone_lr", "epochs": "finetune_epochs"}),
    "full FT, encoder": ("03_peft_methods", {"lr": "lr_full", "epochs": "num_epochs"}),
    "LoRA, encoder": ("03_peft_methods", {"lr": "lr_lora", "r": "recipe_r",
                                          "alpha": lambda c: c["alpha_per_r"] * c["recipe_r"],
                                          "epochs": "num_epochs"}),
    "full FT, 1B LM": ("09_forgetting_and_continual", {"lr": "lr", "steps": "num_steps", "batch": "batch_size"}),
    "LoRA SFT, 1B LM": ("02_lora_from_scratch", {"lr": "lr", "r": "r", "alpha": "alpha", "steps": "num_steps",
                                                 "batch": "batch_size", "accum": "grad_accum",
                                                 "targets": lambda c: ", ".join(c["target_names"])}),
    "QLoRA SFT, 1B LM": ("04_qlora", {"lr": "lr", "r": "r", "alpha": "alpha", "steps": "num_steps",
                                      "batch": "batch_size", "accum": "grad_accum"}),
    "DPO (LoRA), 1B LM": ("06_dpo", {"lr": "lr", "r": "r", "alpha": "alpha", "steps": "num_steps",
                                     "batch": "batch_size", "accum": "grad_accum", "beta": "beta"}),
}


def stated(row: dict) -> dict:
    """What a defaults row says, as numbers: lr, r, alpha, epochs or steps x (batch x accum), beta."""
    out = {"lr": float(row["lr"]), "targets": row["target modules"]}
    if "/" in row["r / alpha"]:
        r, alpha = (int(x) for x in row["r / alpha"].split("/"))
        out.update(r=r, alpha=alpha)
    length = row["length"]
    if m := re.match(r"(\d+) epochs?", length):
        out["epochs"] = int(m.group(1))
    if m := re.match(r"(\d+) steps x (?:\((\d+) x (\d+)\)|(\d+))", length):
        out["steps"] = int(m.group(1))
        out["batch"] = int(m.group(2) or m.group(4))
        if m.group(3):
            out["accum"] = int(m.group(3))
    if m := re.search(r"beta (\d+(?:\.\d+)?)", row["other"]):
        out["beta"] = float(m.group(1))
    return out


def defaults_problems(text: str) -> list[str]:
    body = section(text, "2. Default hyper-parameters")
    header = ["method", "lr", "r / alpha", "target modules", "length", "warm-up", "weight decay", "other", "source"]
    rows = [dict(zip(header, r)) for r in table_rows(body)]
    problems = []
    for name, (stem, fields) in LESSON_ROWS.items():
        row = next((r for r in rows if r["method"] == name), None)
        if row is None:
            problems.append(f"no defaults row {name!r}")
            continue
        if f"lesson {stem[:2]}" not in row["source"]:
            problems.append(f"{name}: source {row['source']!r}, want lesson {stem[:2]}")
        cfg, says = lesson_config(stem), stated(row)
        for key, field in fields.items():
            want = field(cfg) if callable(field) else cfg[field]
            if says.get(key) != want:
                problems.append(f"{name}: the guide says {key} = {says.get(key)!r}, lesson {stem} has {want!r}")
    return problems


def test_lesson_config_reads_the_full_profile():
    cfg = lesson_config("04_qlora")
    assert (cfg["r"], cfg["alpha"], cfg["lr"], cfg["optimizer"]) == (16, 32, 2e-4, "paged_adamw_8bit")
    assert lesson_config("04_qlora", profile="tiny")["r"] == 8


def test_defaults_credited_to_a_lesson_are_its_full_profile_config():
    assert defaults_problems(guide_text()) == []


def test_defaults_check_catches_an_edited_number():
    text = guide_text()
    row = next(line for line in text.splitlines() if line.startswith("| QLoRA SFT, 1B LM |"))
    assert defaults_problems(text.replace(row, row.replace("| 2e-4 |", "| 3e-4 |"))) == [
        "QLoRA SFT, 1B LM: the guide says lr = 0.0003, lesson 04_qlora has 0.0002"]
    assert defaults_problems(text.replace(row, row.replace("16 / 32", "16 / 16"))) == [
        "QLoRA SFT, 1B LM: the guide says alpha = 16, lesson 04_qlora has 32"]


def test_zero_warmup_and_weight_decay_are_ftlabs_defaults():
    """The guide's "0 unless the row says otherwise" is TrainConfig's default."""
    cfg = TrainConfig()
    assert (cfg.warmup_steps, cfg.weight_decay, cfg.max_grad_norm) == (0, 0.0, 1.0)


def test_guide_cites_nothing_outside_the_repository():
    text = guide_text()
    assert not re.search(r"(?<![\w.])/(work|home|tmp|root)/", text), "an absolute path of this machine in the guide"
    assert "](../" not in text and "](/" not in text, "a link that leaves the repository"
    assert not re.search(r"[\u200b-\u200f\u2060]", text), "invisible characters in the guide"
