"""The seed's drills D1-D5 (lesson 08): LoRA counting, QLoRA memory, DPO, prompt tuning, forgetting."""

from __future__ import annotations

from ._core import AnswerError, Drill, choice, close, numeric, parse_number, register

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
# D3: the reward difference of two answers from their log-ratios alone: log Z(x) is unknown and cancels
D3_BETA, D3_LOG_RATIOS = 0.5, (1.2, 0.2)
D3_DIFFERENCE = D3_BETA * (D3_LOG_RATIOS[0] - D3_LOG_RATIOS[1])

register(Drill(
    "d3", "Why DPO needs no reward model", LESSON, 2, "numeric", D3_DIFFERENCE, numeric(
        D3_DIFFERENCE, rel=0.02,
        hints=[(D3_LOG_RATIOS[0] - D3_LOG_RATIOS[1], "The log-ratios are right, but the reward is beta times the "
                                                      "log-ratio: multiply the difference by beta."),
               (D3_BETA * (D3_LOG_RATIOS[0] + D3_LOG_RATIOS[1]), "A difference of rewards: subtract the two "
                                                                    "log-ratios, do not add them."),
               ((D3_LOG_RATIOS[0] - D3_LOG_RATIOS[1]) / D3_BETA, "beta multiplies the log-ratio; it does not "
                                                                  "divide it."),
               (-D3_DIFFERENCE, "Sign: y1 has the larger log-ratio, so its reward is the larger one.")],
        fallback="Write r(x, y1) - r(x, y2) with the formula above: what happens to beta*log Z(x)?",
        praise=f"beta*({D3_LOG_RATIOS[0]} - {D3_LOG_RATIOS[1]}) = {D3_DIFFERENCE:g}. Both answers share the "
               "prompt, so beta*log Z(x) is the same in "
               "both rewards and cancels: the difference, the only thing Bradley-Terry looks at, needs "
               "no Z and no reward model. That is the step that turns RLHF into DPO's logistic loss."),
    wrong=(D3_LOG_RATIOS[0] - D3_LOG_RATIOS[1], D3_BETA * sum(D3_LOG_RATIOS), -D3_DIFFERENCE),
    prompt=f"r(x, y) = beta*log(pi*(y|x)/pi_ref(y|x)) + beta*log Z(x). With beta = {D3_BETA} and log-ratios "
           f"{D3_LOG_RATIOS[0]} for y1 and {D3_LOG_RATIOS[1]} for y2 (same prompt x, Z(x) unknown): "
           "r(x, y1) - r(x, y2) = ?"))
register(Drill(
    "d4", "When prompt tuning beats LoRA", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "Small bases are where prompt tuning loses most: a soft prompt only acts at the input, and "
              "a small model does little with what it is told in context.",
         "c": "Past a few dozen tokens a longer soft prompt stops helping; length does not close the gap.",
         "d": "Lester et al. measured it matching full fine-tuning: on the largest bases."},
        "Soft prompts only steer the input; that is enough once the base has strong in-context "
        "ability (~10B+). At 1-7B, LoRA, which adapts every attention projection, wins."),
    wrong=("a", "c", "d"),
    prompt="Prompt tuning matches full fine-tuning only for some base models. Which?",
    options={"a": "Small bases, under 1B parameters.",
             "b": "Very large bases, around 10B parameters and more.",
             "c": "Any size, given a soft prompt of 100 tokens or more.",
             "d": "None: it never matches full fine-tuning."}))
register(Drill(
    "d5", "Diagnosing catastrophic forgetting", LESSON, 2, "choice", "b", choice(
        "b",
        {"a": "An underfit model would be bad at the medical questions too; this one answers them.",
         "c": "Fine-tuning does not touch the tokenizer: the same text gives the same tokens.",
         "d": "Overfitting would show on *held-out medical* questions. Arithmetic is a skill the "
              "training data never asked for, and it is gone."},
        "Catastrophic forgetting: full FT on a narrow set overwrote weights that general skills use. "
        "Fix it with LoRA (a frozen base), a 5-10x lower lr, general data mixed into each batch, and "
        "early stopping on a general eval; lesson 09 measures each."),
    wrong=("a", "c", "d"),
    prompt="Full FT of an 8B model on 500 medical Q&A pairs: it answers medical questions, but now fails "
           "basic arithmetic. What happened?",
    options={"a": "Underfitting: 500 pairs are too few for the model to learn anything.",
             "b": "Catastrophic forgetting: the updates for the narrow task overwrote what arithmetic relied on.",
             "c": "Fine-tuning changed how the tokenizer splits numbers.",
             "d": "Overfitting to the 500 medical pairs."}))
