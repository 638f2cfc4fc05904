"""The dependency floors, and the micro-world's tokenizers under every transformers in range.

- scripts/floors.py (what `make test-floors` installs) prints exactly the lower bounds that
  pyproject.toml declares, read here independently with `packaging`;
- requirements.txt's exact pins lie inside pyproject's ranges;
- under `make test-floors` (FTLAB_TEST_FLOORS=1) the installed versions are those floors;
- data/lm, data/clip and data/text/encoder give the same ids, special tokens and vocabulary as
  the files shipped before their tokenizer configs were rewritten for transformers 4.x and 5.x
  (values recorded under transformers 5.23.0), and their configs stay in the form both read.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ROOT / "scripts" / "floors.py"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _floor(req: Requirement) -> Version:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    assert len(floors) == 1, f"{req}: one '>=' lower bound (the floor make test-floors installs)"
    return floors[0]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt pins exactly: {line}"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _floors_script(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, str(FLOORS), *args], capture_output=True, text=True, check=True)
    return out.stdout.split()


def _floors_module():
    spec = importlib.util.spec_from_file_location("ftlab_floors_script", FLOORS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floors_script_prints_pyprojects_lower_bounds():
    project = _pyproject()
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["quant"]]
    printed = [Requirement(line) for line in _floors_script("--extra", "quant")]
    assert [canonicalize_name(r.name) for r in printed] == [canonicalize_name(r.name) for r in reqs]
    for want, got in zip(reqs, printed):
        (spec,) = got.specifier
        assert spec.operator == "==" and Version(spec.version) == _floor(want), (str(want), str(got))


def test_floors_script_keeps_pinned_names_at_requirements_txt():
    pins = _pins()
    printed = dict(line.split("==") for line in _floors_script("--extra", "quant", "--pinned", "torch", "pytest"))
    assert printed["torch"] == pins["torch"]  # the pin replaces torch's floor
    assert printed["pytest"] == pins["pytest"]  # not a dependency: added from requirements.txt
    assert printed["transformers"] == str(_floor(Requirement(next(
        r for r in _pyproject()["dependencies"] if r.startswith("transformers")))))


def test_floors_script_rejects_a_range_without_a_floor():
    module = _floors_module()
    assert module.floor_of("numpy>=2.0,<3 ; python_version >= '3.10'") == ("numpy", "2.0")
    for req in ("numpy", "numpy<3", "numpy==2.0", "numpy>2.0"):
        with pytest.raises(ValueError):
            module.floor_of(req)


def test_requirements_txt_pins_satisfy_pyprojects_ranges():
    project, pins = _pyproject(), _pins()
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    for line in reqs:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"


@pytest.mark.skipif(not os.environ.get("FTLAB_TEST_FLOORS"), reason="only under make test-floors")
def test_installed_versions_are_the_floors():
    from importlib.metadata import version

    for line in _floors_script("--extra", "quant", "--pinned", *os.environ["FTLAB_TEST_FLOORS"].split()):
        name, floor = line.split("==")
        assert Version(version(name)) == Version(floor), f"{name} {version(name)} installed, floor {floor}"


# -- the micro-world's tokenizers ------------------------------------------------------------------
# Recorded under transformers 5.23.0 from the files as shipped before their configs were rewritten.

TOKENIZERS = {
    "lm": {
        "texts": ["Where does Kafi live?", "<|user|>\nWhat is 7 + 5?<|assistant|>\n12</s>"],
        "ids": [[1, 554, 339, 597, 415, 35], [1, 3, 203, 491, 268, 475, 291, 490, 35, 4, 203, 21, 22, 2]],
        "len": 768, "max": 256, "vocab_sha": "dded1c3467090f38",
        "special": {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"},
        "all_special": [(0, "<pad>"), (1, "<s>"), (2, "</s>"), (3, "<|user|>"), (4, "<|assistant|>")],
    },
    "clip": {
        "texts": ["a photo of a heart.", "a small red star on a blue background"],
        "ids": [[2, 4, 5, 6, 4, 20, 3], [2, 4, 31, 25, 16, 7, 4, 27, 8, 3]],
        "len": 37, "max": 16, "vocab_sha": "edde4a24bd3312aa",
        "special": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"},
        "all_special": [(0, "<pad>"), (1, "<unk>"), (2, "<s>"), (3, "</s>")],
    },
    "text/encoder": {
        "texts": ["The movie was great!! [MASK]", "an utterly boring film"],
        "ids": [[2, 80, 30, 47, 762, 44, 83, 532, 1, 1, 4, 3], [2, 18, 48, 38, 60, 815, 102, 486, 252, 3]],
        "len": 1200, "max": 128, "vocab_sha": "97d81856676a4909",
        "special": {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"},
        "all_special": [(0, "[PAD]"), (1, "[UNK]"), (2, "[CLS]"), (3, "[SEP]"), (4, "[MASK]")],
    },
}


@pytest.mark.parametrize("folder", sorted(TOKENIZERS))
def test_tokenizer_gives_the_shipped_ids_and_special_tokens(folder):
    from transformers import AutoTokenizer

    want = TOKENIZERS[folder]
    tok = AutoTokenizer.from_pretrained(ROOT / "data" / folder)
    assert [tok(t)["input_ids"] for t in want["texts"]] == want["ids"]
    assert (len(tok), tok.model_max_length) == (want["len"], want["max"])
    special = {k: v for k, v in tok.special_tokens_map.items() if k != "additional_special_tokens"}  # 4.x lists it
    assert special == want["special"]
    assert sorted(zip(tok.all_special_ids, tok.all_special_tokens)) == want["all_special"]
    vocab = json.dumps(sorted(tok.get_vocab().items()))
    assert hashlib.sha256(vocab.encode()).hexdigest()[:16] == want["vocab_sha"]


def test_lm_chat_template_and_special_markers():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ROOT / "data" / "lm")
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    ids = chat["input_ids"] if hasattr(chat, "keys") else chat  # a BatchEncoding in newer releases
    assert list(ids) == [1, 3, 203, 76, 77, 203, 4, 203, 93, 83, 2, 203]
    assert tok.decode([1, 3, 203, 76, 77, 4, 2], skip_special_tokens=True) == "\nhi"  # the markers are special
    assert (tok.padding_side, tok.pad_token_id, tok.eos_token_id) == ("right", 0, 2)


def test_clip_processor_tokenizes_as_shipped():
    from transformers import CLIPProcessor

    processor = CLIPProcessor.from_pretrained(ROOT / "data" / "clip")
    ids = processor(text=["a photo of a heart.", "a star"], padding=True)["input_ids"]
    assert [list(row) for row in ids] == [[2, 4, 5, 6, 4, 20, 3], [2, 4, 16, 3, 0, 0, 0]]


@pytest.mark.parametrize("folder", sorted(TOKENIZERS))
def test_tokenizer_config_is_in_a_form_transformers_4_and_5_both_read(folder):
    cfg = json.loads((ROOT / "data" / folder / "tokenizer_config.json").read_text())
    # 5.x's "TokenizersBackend" does not exist in 4.x; a model's slow class name (4.x adds "Fast")
    # or PreTrainedTokenizerFast both releases know.
    assert cfg["tokenizer_class"] in ("PreTrainedTokenizerFast", "DistilBertTokenizer")
    # 4.x reads "extra_special_tokens" as a dict of named tokens and fails on 5.x's list;
    # "additional_special_tokens" (a list) is read by both (5.x renames it on load).
    assert not isinstance(cfg.get("extra_special_tokens"), list)
