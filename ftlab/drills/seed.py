"""The seed's drills D1-D5 (lesson 08): LoRA counting, QLoRA memory, DPO, prompt tuning, forgetting."""

from __future__ import annotations

from ._core import AnswerError, Drill, choice, close, parse_number, register

LESSON = "08_drills"
D1_PARAMS = 16 * (4096 + 4096)
D1_FRACTION = D1_PARAMS / 4096**2


def _pair(answer, what: str, example: str):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        raise AnswerError(f"answer with a pair: ({what}), e.g. {example}")
    return parse_number(answer[0]), parse_number(answer[1])


def _grade_d1(answer):
    params, frac = _pair(answer, "number of LoRA parameters, fraction of the linear", "(12345, 0.01) or (12345, '1%')")
    if params == 16 * 4096:
        return False, "That is one of the two factors. LoRA adds A (r x k) *and* B (d x r)."
    if params == 4096 * 4096:
        return False, "That is the frozen matrix itself. Count only the new low-rank factors."
    if params != D1_PARAMS:
        return False, "Count the entries of A (r rows, k columns) and B (d rows, r columns)."
    if close(frac * 100, D1_FRACTION, 0.03):
        return False, "Parameters right. The fraction looks 100x too small: 0.5% is 0.005."
    if not close(frac, D1_FRACTION, 0.03):
        return False, "Parameters right. Divide them by d*k, the size of the full 4096x4096 matrix."
    return True, "r(d + k) = 131,072 new parameters, 0.78% of the 16.8M in the linear."


def _grade_d2(answer):
    full, base = _pair(answer, "GB for full fine-tuning of 7B in fp16 with Adam, GB for QLoRA's 4-bit base", "(100, 10)")
    if close(full, 14, 0.1):
        return False, "14 GB is only the fp16 weights. Training also stores gradients and Adam's two moments."
    if close(full, 28, 0.1):
        return False, "Weights + gradients. Adam keeps two fp32 moments per parameter: 8 more bytes."
    if not (close(full, 84, 0.08) or close(full, 112, 0.08)):  # 112 with fp32 master weights is fair too
        return False, "Add bytes per parameter: fp16 weights 2, fp16 grads 2, Adam moments 2 x 4; times 7e9."
    if close(base, 14, 0.1) or close(base, 7, 0.1):
        return False, "Full FT right. For the base: 4 bits is half a byte per parameter."
    if not close(base, 3.5, 0.15):
        return False, "Full FT right. The 4-bit base: 7e9 parameters x 0.5 byte."
    return True, ("12 bytes/param x 7e9 = 84 GB (112 GB with fp32 master weights); the NF4 base "
                  "is 3.5 GB plus its scales, and only the LoRA factors carry Adam state.")


register(Drill(
    "d1", "LoRA parameters vs full fine-tuning", LESSON, 1, "numeric", (D1_PARAMS, D1_FRACTION), _grade_d1,
    wrong=((16 * 4096, 0.004), (D1_PARAMS, D1_FRACTION / 100), (4096**2, 1.0)),
    prompt="A 4096x4096 linear, LoRA rank 16: (new parameters, fraction of the linear's)."))
register(Drill(
    "d2", "QLoRA memory savings", LESSON, 2, "numeric", (84, 3.5), _grade_d2,
    wrong=((14, 3.5), (84, 14), (28, 3.5)),
    prompt="7B parameters: (GB for full FT in fp16 with Adam, GB for QLoRA's 4-bit base weights)."))
register(Drill(
    "d3", "Why DPO needs no reward model", LESSON, 2, "choice", "c", choice(
        "c",
        {"a": "DPO does use a reward: it is implicit. Ask what the optimal KL-regularised policy says "
              "about the reward, and what happens to the partition function in a *pair*.",
         "b": "A reference model is not a reward model, and DPO keeps one. Look at the closed form of "
              "the optimal policy.",
         "d": "DPO is still trained on preference pairs, just like a reward model. What cancels in the "
              "Bradley-Terry difference?"},
        "The optimal policy gives r = beta*log(pi/pi_ref) + beta*log Z(x); Z(x) cancels in the "
        "chosen-minus-rejected difference, leaving a classification loss on log-ratios."),
    wrong=("a", "b", "d"),
    prompt="RLHF fits a reward model, then runs PPO against it. DPO skips both. Why is that valid?",
    options={"a": "DPO ignores rewards altogether; it only imitates the chosen answers.",
             "b": "DPO uses the reference model as its reward model.",
             "c": "The KL-regularised optimum gives the reward as beta*log(pi/pi_ref) plus a term "
                  "Z(x) that cancels between chosen and rejected.",
             "d": "DPO needs no preference data, so no reward model can be fit."}))
register(Drill(
    "d4", "When prompt tuning beats LoRA", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "Fewer parameters is the cost, not the advantage: it works only if the base can be "
              "steered from its input alone. When can it?",
         "c": "Prompt tuning is cheaper at every size. The question is when it is *competitive*.",
         "d": "Small bases are where prompt tuning loses most. Think about in-context ability."},
        "Soft prompts only steer the input; that is enough once the base has strong in-context "
        "ability (~10B+). At 1-7B, LoRA, which adapts every attention projection, wins."),
    wrong=("a", "c", "d"),
    prompt="Prompt tuning matches full fine-tuning only for some base models. Which, and why?",
    options={"a": "Always: fewer trainable parameters always generalise better.",
             "b": "For very large bases (around 10B+), whose in-context ability a short soft prompt can steer.",
             "c": "Never: it is more expensive than LoRA.",
             "d": "For small bases under 1B, where LoRA overfits."}))
register(Drill(
    "d5", "Diagnosing catastrophic forgetting", LESSON, 2, "choice", "d", choice(
        "d",
        {"a": "More epochs on 500 medical pairs makes the narrow fit, and the forgetting, worse.",
         "b": "A bigger learning rate moves the weights further from what encoded arithmetic.",
         "c": "Unfreezing more is the cause, not the cure: all 8B weights already moved."},
        "Forgetting: full FT on a narrow set overwrote general skills. Use LoRA (frozen base), a "
        "5-10x lower lr, mix general data into each batch, and early-stop on a general eval."),
    wrong=("a", "b", "c"),
    prompt="Full FT of an 8B model on 500 medical Q&A pairs; it now fails basic arithmetic. Diagnose and fix.",
    options={"a": "Underfitting: train for more epochs on the medical data.",
             "b": "The learning rate is too low: raise it so the medical skill sets in faster.",
             "c": "Too few trainable parameters: unfreeze the embeddings too.",
             "d": "Catastrophic forgetting: use LoRA, lower the lr, replay general data, early-stop on a general eval."}))
