"""Auto-checked drills: write an answer, call ``check(id, answer)``, get told at once.

A result is ``"pass"``, ``"fail"`` (with a hint that helps without giving the answer away) or
``"not attempted"`` (``None``, ``...``, an empty string, or a function that still raises
``NotImplementedError``). With ``FTLAB_DRILLS=strict`` anything but a pass raises
:class:`DrillNotPassed`, so ``FTLAB_DRILLS=strict pytest --nbmake notebooks/`` grades a
student's own notebooks. Lesson 08 gathers the seed's drills D1-D5.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

PASS, FAIL, BLANK = "pass", "fail", "not attempted"


class DrillNotPassed(AssertionError):
    """Raised in strict mode (``FTLAB_DRILLS=strict``) when a drill is not passed."""


@dataclass(frozen=True)
class Result:
    drill_id: str
    status: str  # "pass", "fail" or "not attempted"
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def __str__(self) -> str:
        mark = {PASS: "✅", FAIL: "❌", BLANK: "⬜"}[self.status]
        return f"{mark} {self.drill_id}: {self.status}. {self.message}"


@dataclass(frozen=True)
class Drill:
    id: str
    title: str
    lesson: str
    difficulty: int  # 1, 2 or 3 marks
    kind: str  # "numeric", "choice" or "code"
    reference: object
    grade: Callable[[object], tuple[bool, str]]  # answer -> (passed, hint or praise)
    options: dict = field(default_factory=dict)  # for choice drills: letter -> text

    @property
    def marks(self) -> str:
        return "★" * self.difficulty + "☆" * (3 - self.difficulty)


# -- answer parsing -------------------------------------------------------------------------

def parse_number(value) -> float:
    """A number from ``131072``, ``"131,072"``, ``"0.78%"`` (-> 0.0078) or ``"84 GB"`` (-> 84)."""
    if isinstance(value, bool):
        raise TypeError("a True/False is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "").replace("_", "")
        for unit in ("gb", "gib", "bytes", "params"):
            if text.lower().endswith(unit):
                text = text[: -len(unit)].strip()
        scale = 1.0
        if text.endswith("%"):
            text, scale = text[:-1].strip(), 0.01
        return float(text) * scale
    raise TypeError(f"expected a number or a numeric string, got {type(value).__name__}")


def _close(value: float, target: float, rel: float) -> bool:
    return math.isfinite(value) and abs(value - target) <= rel * abs(target)


def is_blank(answer) -> bool:
    """None, ``...``, an empty string, or an empty tuple/list/dict count as not attempted."""
    if answer is None or answer is Ellipsis:
        return True
    if isinstance(answer, str) and not answer.strip():
        return True
    if isinstance(answer, (tuple, list, dict)) and (not answer or all(is_blank(a) for a in
                                                                      (answer.values() if isinstance(answer, dict) else answer))):
        return True
    return False


# -- the drills ------------------------------------------------------------------------------

def _grade_d1(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise TypeError("answer D1 with a pair: (number of LoRA parameters, fraction of the linear), "
                        "e.g. (12345, 0.01) or (12345, '1%')")
    params, frac = parse_number(answer[0]), parse_number(answer[1])
    if params == 16 * 4096:
        return False, "That is one of the two factors. LoRA adds A (r x k) *and* B (d x r)."
    if params == 4096 * 4096:
        return False, "That is the frozen matrix itself. Count only the new low-rank factors."
    if params != 16 * (4096 + 4096):
        return False, "Count the entries of A (r rows, k columns) and B (d rows, r columns)."
    if _close(frac * 100, 131072 / 4096**2, 0.03):
        return False, "Parameters right. The fraction looks 100x too small: 0.5% is 0.005."
    if not _close(frac, 131072 / 4096**2, 0.03):
        return False, "Parameters right. Divide them by d*k, the size of the full 4096x4096 matrix."
    return True, "r(d + k) = 131,072 new parameters, 0.78% of the 16.8M in the linear."


def _grade_d2(answer):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise TypeError("answer D2 with a pair in GB: (full fine-tuning of 7B in fp16 with Adam, "
                        "QLoRA's 4-bit base weights), e.g. (100, 10)")
    full, base = parse_number(answer[0]), parse_number(answer[1])
    if _close(full, 14, 0.1):
        return False, "14 GB is only the fp16 weights. Training also stores gradients and Adam's two moments."
    if _close(full, 28, 0.1):
        return False, "Weights + gradients. Adam keeps two fp32 moments per parameter: 8 more bytes."
    if _close(full, 112, 0.08):
        full = 84  # with fp32 master weights: 16 bytes/param is also a fair answer
    if not _close(full, 84, 0.08):
        return False, "Add bytes per parameter: fp16 weights 2, fp16 grads 2, Adam moments 2 x 4; times 7e9."
    if _close(base, 14, 0.1) or _close(base, 7, 0.1):
        return False, "Full FT right. For the base: 4 bits is half a byte per parameter."
    if not _close(base, 3.5, 0.15):
        return False, "Full FT right. The 4-bit base: 7e9 parameters x 0.5 byte."
    return True, ("12 bytes/param x 7e9 = 84 GB (112 GB with fp32 master weights); the NF4 base "
                  "is 3.5 GB plus its scales, and only the LoRA factors carry Adam state.")


def _choice(correct: str, hints: dict[str, str], praise: str):
    def grade(answer):
        if not isinstance(answer, str):
            raise TypeError(f"answer with one letter from {sorted(hints) + [correct]}, as a string")
        letter = answer.strip().lower().rstrip(").")
        if letter == correct:
            return True, praise
        if letter not in hints:
            raise ValueError(f"{answer!r} is not an option; pick one of {sorted(hints) + [correct]}")
        return False, hints[letter]
    return grade


DRILLS: dict[str, Drill] = {}


def _add(drill: Drill) -> None:
    DRILLS[drill.id] = drill


_add(Drill("d1", "LoRA parameters vs full fine-tuning", "08_drills", 1, "numeric",
           (131072, 131072 / 4096**2), _grade_d1))
_add(Drill("d2", "QLoRA memory savings", "08_drills", 2, "numeric", (84, 3.5), _grade_d2))
_add(Drill("d3", "Why DPO needs no reward model", "08_drills", 2, "choice", "c", _choice(
    "c",
    {"a": "DPO does use a reward: it is implicit. Ask what the optimal KL-regularised policy says "
          "about the reward, and what happens to the partition function in a *pair*.",
     "b": "A reference model is not a reward model, and DPO keeps one. Look at the closed form of "
          "the optimal policy.",
     "d": "DPO is still trained on preference pairs, just like a reward model. What cancels in the "
          "Bradley-Terry difference?"},
    "The optimal policy gives r = beta*log(pi/pi_ref) + beta*log Z(x); Z(x) cancels in the "
    "chosen-minus-rejected difference, leaving a classification loss on log-ratios."),
    options={"a": "DPO ignores rewards altogether; it only imitates the chosen answers.",
             "b": "DPO uses the reference model as its reward model.",
             "c": "The KL-regularised optimum gives the reward as beta*log(pi/pi_ref) plus a term "
                  "Z(x) that cancels between chosen and rejected.",
             "d": "DPO needs no preference data, so no reward model can be fit."}))
_add(Drill("d4", "When prompt tuning beats LoRA", "08_drills", 2, "choice", "b", _choice(
    "b",
    {"a": "Fewer parameters is the cost, not the advantage: it works only if the base can be "
          "steered from its input alone. When can it?",
     "c": "Prompt tuning is cheaper at every size. The question is when it is *competitive*.",
     "d": "Small bases are where prompt tuning loses most. Think about in-context ability."},
    "Soft prompts only steer the input; that is enough once the base has strong in-context "
    "ability (~10B+). At 1-7B, LoRA, which adapts every attention projection, wins."),
    options={"a": "Always: fewer trainable parameters always generalise better.",
             "b": "For very large bases (around 10B+), whose in-context ability a short soft prompt can steer.",
             "c": "Never: it is more expensive than LoRA.",
             "d": "For small bases under 1B, where LoRA overfits."}))
_add(Drill("d5", "Diagnosing catastrophic forgetting", "08_drills", 2, "choice", "d", _choice(
    "d",
    {"a": "More epochs on 500 medical pairs makes the narrow fit, and the forgetting, worse.",
     "b": "A bigger learning rate moves the weights further from what encoded arithmetic.",
     "c": "Unfreezing more is the cause, not the cure: all 8B weights already moved."},
    "Forgetting: full FT on a narrow set overwrote general skills. Use LoRA (frozen base), a "
    "5-10x lower lr, mix general data into each batch, and early-stop on a general eval."),
    options={"a": "Underfitting: train for more epochs on the medical data.",
             "b": "The learning rate is too low: raise it so the medical skill sets in faster.",
             "c": "Too few trainable parameters: unfreeze the embeddings too.",
             "d": "Catastrophic forgetting: use LoRA, lower the lr, replay general data, early-stop on a general eval."}))


# -- the public API ---------------------------------------------------------------------------

def all_drills() -> list[str]:
    """Every drill id, in course order."""
    return list(DRILLS)


def _drill(drill_id) -> Drill:
    if not isinstance(drill_id, str) or drill_id.lower() not in DRILLS:
        raise KeyError(f"no drill {drill_id!r}; the drills are {', '.join(DRILLS)}")
    return DRILLS[drill_id.lower()]


def reference(drill_id: str):
    """The reference answer (for tests and the solution cells)."""
    return _drill(drill_id).reference


def describe(drill_id: str) -> str:
    """Title, difficulty marks and, for choice drills, the options."""
    d = _drill(drill_id)
    lines = [f"{d.id.upper()} {d.marks} {d.title}"]
    lines += [f"  ({k}) {v}" for k, v in d.options.items()]
    return "\n".join(lines)


def strict() -> bool:
    return os.environ.get("FTLAB_DRILLS", "").strip().lower() == "strict"


def check(drill_id: str, answer) -> Result:
    """Grade ``answer`` for ``drill_id``; print and return the :class:`Result`."""
    try:
        drill = _drill(drill_id)
    except KeyError as err:
        result = Result(str(drill_id), FAIL, err.args[0])
    else:
        if callable(answer) and drill.kind != "code":
            result = Result(drill.id, FAIL, "this drill wants a value, not a function; call it and pass the result")
        elif is_blank(answer):
            result = Result(drill.id, BLANK, "Write your answer in place of the ... and run the cell again.")
        else:
            try:
                ok, text = drill.grade(answer)
            except NotImplementedError:
                result = Result(drill.id, BLANK, "Your function still raises NotImplementedError.")
            except (TypeError, ValueError) as err:
                result = Result(drill.id, FAIL, f"Could not read the answer: {err}")
            else:
                result = Result(drill.id, PASS if ok else FAIL, text if ok else f"Hint: {text}")
    print(result)
    if strict() and not result.passed:
        raise DrillNotPassed(str(result))
    return result
