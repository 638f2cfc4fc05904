"""Direct Preference Optimization by hand (lesson 06), checked against TRL's ``DPOTrainer``.

DPO trains a policy pi on pairs (prompt, chosen, rejected) against a frozen reference pi_ref
(the SFT model). The implicit reward of a response y is ``beta * (log pi(y|x) - log pi_ref(y|x))``
and the loss is the Bradley-Terry negative log-likelihood that chosen beats rejected::

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))      (averaged over pairs)

where ``pi_c`` is the SUMMED log-probability of the chosen response tokens (prompt excluded).
This is TRL's ``loss_type="sigmoid"`` (trl 1.16: ``DPOTrainer._compute_loss``), and the metrics
:func:`train_dpo` logs carry TRL's names: ``rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``.

The pieces, in the order lesson 06 uses them:

- :func:`tokenize_pair` / :func:`collate_pairs`: a pair becomes two sequences, prompt + chosen + EOS
  and prompt + rejected + EOS, with labels -100 on the prompt (and on padding). A batch of B pairs
  is ONE batch of 2B rows, chosen first (as TRL does: one forward pass for both halves).
- :func:`sequence_logprobs`: the summed log-probability of the response tokens of each row.
- :func:`reference_logprobs`: the same under the reference. By default the reference is the
  policy with its LoRA adapter disabled (``peft``'s ``disable_adapter()``: one model in memory,
  what TRL does with a peft model); pass ``ref_model=`` for a separate frozen copy.
- :func:`dpo_loss`: the formula above, with the rewards.
- :func:`train_dpo`: the loop, a thin layer over :func:`ftlab.train.train`.
- :func:`preference_margins` / :func:`preference_accuracy` / :func:`kl_to_reference`: held-out
  evaluations, memory-bounded at any scale: a few pairs per forward pass
  (:data:`EVAL_PAIRS_PER_BATCH`) and log-probabilities taken one row's response at a time, never a
  float32 log-softmax over a batch's (B, L, V) logits (at 512 tokens and a 32k vocabulary, 32 pairs
  at once held ~10 GB of logits, ~21 GB for the KL).
- :func:`adapter_start` / :func:`fresh_adapter`: several DPO runs as several adapters on one base
  (a larger beta, TRL's run), each from the same starting weights: no copy of the model.

Decisions where the issue was silent (tested in ``tests/test_dpo.py``):

- The rewards :func:`dpo_loss` returns are detached (they are metrics, as in TRL).
- A pair whose chosen equals its rejected warns (its gradient is exactly 0) and is kept; an empty
  response (nothing but whitespace) is a ValueError, because its log-probability would be the
  EOS alone and the pair would teach only "stop now" vs "say something".
- Tokenization is lesson 05's (``ftlab.sft.tokenize_example``): truncation keeps the first
  ``max_length`` tokens (TRL's ``keep_start``); a pair that would keep no response token is a
  ValueError in :func:`tokenize_pair` and dropped and counted by :func:`tokenize_pairs` (as TRL
  drops it), never an all -100 row.
- To train from an SFT adapter, merge it into the base first (``merge_and_unload``) and put a fresh
  LoRA on top: disabling that LoRA then gives the SFT model, the reference DPO needs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ftlab.runtime import capped_rows, model_device
from ftlab.train import IGNORE_INDEX, TrainConfig, train

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins")


# ---------------------------------------------------------------------------------------------
# Tokenization: a pair -> two sequences with the prompt masked


def tokenize_pair(prompt: str, chosen: str, rejected: str, tokenizer, max_length: int | None = None,
                  template: str = "chat") -> dict:
    """One preference pair -> ``{"chosen": {...}, "rejected": {...}}``, each with ``input_ids``,
    ``attention_mask`` and ``labels`` (lists; labels -100 on the prompt).

    Each side is :func:`ftlab.sft.tokenize_example` (lesson 05: the chat template, TRL's boundary
    rule, truncation that never leaves an all -100 example), so the token ids equal those TRL's
    ``DPOTrainer`` builds from ``ftlab.sft.trl_records(rows, template)``. Raises ValueError on
    an empty response; warns when chosen equals rejected.
    """
    from ftlab.sft import tokenize_example

    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"The {name} response of the pair with prompt {prompt[:60]!r} is empty: "
                             "DPO compares two responses, so both need at least one token "
                             "(drop the pair from the data).")
    if chosen.strip() == rejected.strip():
        warnings.warn(f"chosen and rejected are identical for prompt {prompt[:60]!r}: the pair's DPO "
                      "gradient is exactly 0 (its margin is 0 whatever the model), so it only dilutes "
                      "the batch. Drop it from the data.", stacklevel=2)
    return {"chosen": tokenize_example(prompt, chosen, tokenizer, max_length, template),
            "rejected": tokenize_example(prompt, rejected, tokenizer, max_length, template)}


class PairDataset(list):
    """A list of tokenized pairs (see :func:`tokenize_pair`) that remembers which rows it kept.

    ``kept_rows``: the index in the input of each pair (the i-th pair is row ``kept_rows[i]``);
    ``dropped``: how many rows truncation would have left with no response token.
    """

    def __init__(self, pairs=(), kept_rows=(), dropped=0):
        super().__init__(pairs)
        self.kept_rows, self.dropped = list(kept_rows), int(dropped)


def tokenize_pairs(rows: Sequence[Mapping], tokenizer, max_length: int | None = None,
                   template: str = "chat", verbose: bool = True) -> PairDataset:
    """:func:`tokenize_pair` over rows with ``prompt``, ``chosen``, ``rejected`` (a list or a Dataset).

    A pair whose prompt fills ``max_length`` (no response token would be left) is dropped and
    counted, as TRL's ``DPOTrainer`` drops it; with ``verbose`` the count is printed. Every pair
    dropped is a ValueError. Returns a :class:`PairDataset` (a list; ``.kept_rows`` maps each
    pair back to its row).
    """
    kept, kept_rows, dropped = [], [], 0
    for i, row in enumerate(rows):
        _check_row(i, row)
        try:
            kept.append(tokenize_pair(row["prompt"], row["chosen"], row["rejected"], tokenizer, max_length, template))
            kept_rows.append(i)
        except ValueError as err:
            if "max_length" not in str(err) or "empty" in str(err):
                raise
            dropped += 1
    if dropped and not kept:
        raise ValueError(f"max_length={max_length} drops all {dropped} pairs: every prompt fills it. Raise max_length.")
    if verbose and dropped:
        print(f"tokenize_pairs: dropped {dropped} of {dropped + len(kept)} pairs that max_length={max_length} "
              "would leave with no response token")
    return PairDataset(kept, kept_rows, dropped)


ROW_KEYS = ("prompt", "chosen", "rejected")


def _check_row(i: int, row) -> None:
    if not isinstance(row, Mapping):
        raise TypeError(f"row {i} is a {type(row).__name__}; a DPO row is a dict with the keys {ROW_KEYS}.")
    missing = [k for k in ROW_KEYS if k not in row]
    if missing:
        raise ValueError(f"row {i} has no {', '.join(repr(k) for k in missing)} (its keys: {sorted(row)}). "
                         f"A DPO row needs {ROW_KEYS}: the prompt, the preferred response and the "
                         "dispreferred one.")


def collate_pairs(pairs: Sequence[Mapping], pad_token_id: int = 0) -> dict:
    """B tokenized pairs -> one right-padded batch of 2B rows: the B chosen, then the B rejected.

    Returns ``input_ids``, ``attention_mask`` and ``labels`` of shape (2B, L); padding has
    attention 0 and label -100. Split the per-row results with ``.chunk(2)``.
    """
    rows = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    length = max(len(r["input_ids"]) for r in rows)
    batch = {"input_ids": [], "attention_mask": [], "labels": []}
    for r in rows:
        pad = length - len(r["input_ids"])
        batch["input_ids"].append(list(r["input_ids"]) + [pad_token_id] * pad)
        batch["attention_mask"].append(list(r["attention_mask"]) + [0] * pad)
        batch["labels"].append(list(r["labels"]) + [IGNORE_INDEX] * pad)
    return {k: torch.tensor(v) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# Log-probabilities of the responses


def sequence_logprobs(model, batch: Mapping) -> torch.Tensor:
    """Summed log-probability of each row's response tokens: (B,) float32.

    ``batch``: ``input_ids``, ``attention_mask``, ``labels`` (B, L), labels -100 on the prompt
    and padding. The logits at position t score ``labels[:, t + 1]`` (the HF shift). A row with no
    response token is a ValueError (its sum would silently be 0). The log-softmax is taken one
    row's response at a time (``ftlab.evals.target_logprobs``), never over the whole (B, L, V)
    batch in float32.
    """
    from ftlab.evals import target_logprobs

    labels = batch["labels"]
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, L-1)
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"row(s) {empty} of the batch have no response token (every label is -100): "
                         "check the prompt masking and max_length.")
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return target_logprobs(logits, labels).sum(dim=1)


def _reference(model, ref_model=None):
    """``(context, scorer)``: run ``scorer`` inside ``context`` to get the reference's outputs."""
    if ref_model is not None:
        return nullcontext(), ref_model
    # Under DDP (several processes) the model arrives wrapped; the adapter switch is on the module
    # inside. The reference forward runs without gradients, so it needs no DDP synchronisation.
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if hasattr(inner, "disable_adapter"):
        return inner.disable_adapter(), inner
    raise ValueError("No reference model: pass ref_model=... (a frozen copy of the starting model), "
                     "or train a peft model (get_peft_model) so that the reference is the same model "
                     "with its adapter disabled.")


def reference_logprobs(model, batch: Mapping, ref_model=None) -> torch.Tensor:
    """:func:`sequence_logprobs` under the reference, without gradients: (B,).

    ``ref_model=None``: ``model`` must be a peft model; its adapters are disabled for this forward
    (the reference is the base under the adapter: one model in memory). Otherwise ``ref_model``
    is a separate frozen model.
    """
    context, scorer = _reference(model, ref_model)
    with torch.no_grad(), context:
        return sequence_logprobs(scorer, batch)


# ---------------------------------------------------------------------------------------------
# The loss


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TRL's sigmoid DPO loss. Inputs: (B,) summed response log-probabilities.

    Returns ``(loss, chosen_rewards, rejected_rewards)``: the 0-d mean of
    ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` and the (B,) detached rewards
    ``beta * (policy - reference)``.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0 or not math.isfinite(beta):
        raise ValueError(f"beta={beta!r} is not valid: it is the strength of the pull towards the reference, "
                         "a number > 0 (TRL's default 0.1; larger stays closer to the reference).")
    shapes = {"policy_chosen": policy_chosen.shape, "policy_rejected": policy_rejected.shape,
              "ref_chosen": ref_chosen.shape, "ref_rejected": ref_rejected.shape}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"dpo_loss needs one log-probability per pair in every input, but the shapes "
                         f"differ: {', '.join(f'{k} {tuple(v)}' for k, v in shapes.items())}.")
    if policy_chosen.numel() == 0:
        raise ValueError("dpo_loss got an empty batch (0 pairs).")
    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    loss = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios)).mean()
    return loss, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def optimal_policy(ref_probs, rewards, beta: float) -> tuple[list[float], float]:
    """The closed-form optimum of RLHF's objective ``E[r] - beta * KL(pi || pi_ref)`` over a finite
    set of answers: ``pi*(y) = pi_ref(y) exp(r(y) / beta) / Z`` (lesson 06, the seed's D3).

    Returns ``(pi*, KL(pi* || pi_ref))`` as a list of probabilities and nats. DPO inverts this:
    ``r(y) = beta * log(pi*(y) / pi_ref(y)) + beta * log Z``, and Z cancels in a pair.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0 or not math.isfinite(beta):
        raise ValueError(f"beta={beta!r} is not valid: use a number > 0.")
    ref = torch.tensor(ref_probs, dtype=torch.float64)
    logits = ref.log() + torch.tensor(rewards, dtype=torch.float64) / beta
    policy = torch.softmax(logits, dim=0)
    kl = float((policy * (policy.log() - ref.log())).sum())
    return policy.tolist(), kl


def reward_sums(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's four reward metrics of a batch as SUMS over its pairs (0-d tensors): what a
    ``loss_fn`` hands :func:`ftlab.train.train`, which averages them over each step's pairs."""
    return {"rewards/chosen": chosen_rewards.sum(),
            "rewards/rejected": rejected_rewards.sum(),
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
            "rewards/margins": (chosen_rewards - rejected_rewards).sum()}


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """TRL's four reward metrics of a batch (means over the pairs)."""
    n = chosen_rewards.numel()
    return {k: v.item() / n for k, v in reward_sums(chosen_rewards, rejected_rewards).items()}


def dpo_batch(model, batch: Mapping, beta: float = 0.1, ref_model=None):
    """Loss and rewards of a collated batch (2B rows, chosen first): ``(loss, chosen_rewards, rejected_rewards)``."""
    n = batch["input_ids"].shape[0]
    if n % 2:
        raise ValueError(f"a DPO batch holds chosen rows then rejected rows (2B rows); got {n} rows. "
                         "Build it with ftlab.dpo.collate_pairs.")
    policy_chosen, policy_rejected = sequence_logprobs(model, batch).chunk(2)
    ref_chosen, ref_rejected = reference_logprobs(model, batch, ref_model).chunk(2)
    return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)


def _batches(pairs, batch_size, pad_token_id, device):
    for start in range(0, len(pairs), batch_size):
        batch = collate_pairs(pairs[start:start + batch_size], pad_token_id)
        yield {k: v.to(device) for k, v in batch.items()}


def _eval_batches(fn: str, model, pairs, batch_size: int, pad_token_id: int):
    """The evaluations' prologue: check the arguments, cap the pairs (rehearsal), and return the
    collated batches of ``batch_size`` pairs on the model's device (a generator)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}(model, pairs, ...) takes the policy model first; got a "
                        f"{type(model).__name__}. Call {fn}(policy, held_out_pairs).")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not valid: it is the number of pairs scored per "
                         "forward pass (2 x batch_size rows), an int >= 1.")
    pairs = capped_rows(list(pairs), batch_size)
    if not pairs:
        raise ValueError(f"{fn} got no pairs to score: pass the held-out pairs from tokenize_pairs().")
    _check_pairs(fn, pairs)
    return _batches(pairs, batch_size, pad_token_id, model_device(model))


def _check_pairs(fn: str, pairs) -> None:
    """Tokenized pairs (``tokenize_pair``'s output), or an error that says how to get them."""
    for i, pair in enumerate(pairs):
        if not isinstance(pair, Mapping):
            raise TypeError(f"{fn}: pair {i} is a {type(pair).__name__}, not a tokenized pair "
                            "{'chosen': {...}, 'rejected': {...}}. Build the pairs with "
                            "dpo.tokenize_pairs(rows, tokenizer).")
        if any(isinstance(v, str) for v in pair.values()):
            raise TypeError(f"{fn} takes tokenized pairs, but pair {i} is text (keys {sorted(pair)}). "
                            "Tokenize first: pairs = dpo.tokenize_pairs(rows, tokenizer).")
        missing = [k for k in ("chosen", "rejected") if k not in pair]
        if missing:
            raise ValueError(f"{fn}: pair {i} has no {' or '.join(repr(k) for k in missing)} side (it has "
                             f"{sorted(pair)}). A DPO pair needs both a chosen and a rejected response: "
                             "build the pairs with dpo.tokenize_pairs(rows, tokenizer).")
        for side in ("chosen", "rejected"):
            seq = pair[side]
            if not isinstance(seq, Mapping) or not {"input_ids", "attention_mask", "labels"} <= set(seq):
                raise ValueError(f"{fn}: the {side} side of pair {i} is not tokenized (it needs input_ids, "
                                 "attention_mask and labels). Build the pairs with dpo.tokenize_pairs(rows, "
                                 "tokenizer).")


# Pairs per forward pass in the evaluations: 8 rows of at most max_length tokens. Their logits are
# 8 x L x V half-precision values (262 MB at 512 tokens and TinyLlama's 32,000-token vocabulary,
# 1 GB at Llama-3's 128,256), whatever the number of pairs scored.
EVAL_PAIRS_PER_BATCH = 4


@torch.no_grad()
def preference_margins(model, pairs: Sequence[Mapping], ref_model=None, batch_size: int = EVAL_PAIRS_PER_BATCH,
                       pad_token_id: int = 0) -> torch.Tensor:
    """Implicit reward margin of each tokenized pair, ``(pi_c - ref_c) - (pi_r - ref_r)``: (N,) float32, CPU.

    Multiply by beta for TRL's ``rewards/margins``; the share > 0 is :func:`preference_accuracy`.
    Memory-bounded: ``batch_size`` pairs per forward pass (the policy's, then the reference's,
    which is the same model with its adapter disabled unless ``ref_model`` is given), and the
    log-probabilities are taken row by row (:func:`sequence_logprobs`).
    """
    return _margins("preference_margins", model, pairs, ref_model, batch_size, pad_token_id)


@torch.no_grad()
def _margins(fn: str, model, pairs, ref_model, batch_size: int, pad_token_id: int) -> torch.Tensor:
    batches = _eval_batches(fn, model, pairs, batch_size, pad_token_id)
    was_training = model.training
    model.eval()
    margins = []
    try:
        for batch in batches:
            policy_chosen, policy_rejected = sequence_logprobs(model, batch).chunk(2)
            ref_chosen, ref_rejected = reference_logprobs(model, batch, ref_model).chunk(2)
            margins.append(((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(margins)


TIE = 1e-4  # a margin within this of 0 (nats) is a tie: before training every margin is 0


def margin_accuracy(margins: torch.Tensor) -> float:
    """The share of margins > 0, counted as TRL's ``rewards/accuracies`` counts them (chosen's reward
    strictly higher than rejected's): a tie counts 0. A margin within :data:`TIE` of 0 is a tie,
    so float noise in an untrained policy does not count as a preference."""
    margins = torch.as_tensor(margins, dtype=torch.float32).flatten()
    if not margins.numel():
        raise ValueError("margin_accuracy needs at least one margin.")
    return float((margins > TIE).sum()) / margins.numel()


def accuracy_by_kind(margins: torch.Tensor, kinds: Sequence[str]) -> dict[str, float]:
    """:func:`margin_accuracy` per kind of pair: ``margins[i]`` is the pair of kind ``kinds[i]``
    (pairs not scored, past the end of ``margins``, are left out). Sorted by kind."""
    margins = torch.as_tensor(margins, dtype=torch.float32).flatten()
    kinds = list(kinds)[:margins.numel()]
    if len(kinds) < margins.numel():
        raise ValueError(f"{margins.numel()} margins but only {len(kinds)} kinds: one kind per pair.")
    return {k: margin_accuracy(margins[[i for i, kind in enumerate(kinds) if kind == k]]) for k in sorted(set(kinds))}


def preference_accuracy(model, pairs: Sequence[Mapping], ref_model=None, batch_size: int = EVAL_PAIRS_PER_BATCH,
                        pad_token_id: int = 0) -> float:
    """Held-out reward accuracy: the share of tokenized pairs whose implicit reward margin
    ``(pi_c - ref_c) - (pi_r - ref_r)`` is positive (a tie counts 0).

    This is TRL's ``rewards/accuracies`` on an eval set, counted as TRL counts it. Before DPO the
    policy IS the reference, every margin is 0 and the accuracy is 0%: that is a tie, not the
    model's opinion. The SFT model's own preference (summed log-probabilities of chosen against
    rejected) is the baseline to compare with (lesson 06).
    ``batch_size`` pairs per forward pass (see :func:`preference_margins`).
    """
    return margin_accuracy(_margins("preference_accuracy", model, pairs, ref_model, batch_size, pad_token_id))


@torch.no_grad()
def kl_to_reference(model, pairs: Sequence[Mapping], ref_model=None, batch_size: int = EVAL_PAIRS_PER_BATCH,
                    pad_token_id: int = 0) -> float:
    """Mean per-token KL(pi || pi_ref) of the next-token distributions over the response tokens
    of ``pairs`` (nats per token): how far DPO moved the policy from the reference.

    Memory-bounded: ``batch_size`` pairs per forward pass, and the two float32 log-softmaxes are
    taken one row's response positions at a time, never over the batch's (B, L, V) logits.
    """
    batches = _eval_batches("kl_to_reference", model, pairs, batch_size, pad_token_id)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for batch in batches:
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            logits = model(**inputs).logits
            context, scorer = _reference(model, ref_model)
            with context:
                ref_logits = scorer(**inputs).logits
            mask = batch["labels"][:, 1:] != IGNORE_INDEX
            for i in range(mask.shape[0]):
                pos = mask[i].nonzero(as_tuple=True)[0]
                logp = torch.log_softmax(logits[i, pos].float(), dim=-1)  # (n_i, V)
                ref_logp = torch.log_softmax(ref_logits[i, pos].float(), dim=-1)
                total += float((logp.exp() * (logp - ref_logp)).sum())
                tokens += len(pos)
            del logits, ref_logits
    finally:
        model.train(was_training)
    return total / tokens


# ---------------------------------------------------------------------------------------------
# Several DPO adapters on one base (lesson 06): no copy of the model


def adapter_start(model) -> dict[str, torch.Tensor]:
    """A copy of the active adapter's weights (``peft.get_peft_model_state_dict``): the point
    :func:`fresh_adapter` restarts a run from. Megabytes, where a copy of the model is gigabytes."""
    from peft import get_peft_model_state_dict

    if not hasattr(model, "peft_config"):
        raise ValueError("adapter_start needs a peft model (get_peft_model): it copies the adapter's weights.")
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=model.active_adapter).items()}


def fresh_adapter(model, name: str, start: Mapping[str, torch.Tensor], config=None):
    """Put an adapter ``name`` with the weights ``start`` on the peft ``model``, and make it the active one.

    It sits on the same frozen base as the other adapters, so a second DPO run costs the adapter's
    megabytes, not a second model; the reference (every adapter disabled) is unchanged. An adapter
    already called ``name`` (a cell run again) is replaced. ``config``: its ``LoraConfig``
    (default: the active adapter's). Returns ``model``; ``model.set_adapter(other)`` switches back.
    """
    from peft import set_peft_model_state_dict

    if not hasattr(model, "peft_config"):
        raise ValueError("fresh_adapter needs a peft model (get_peft_model).")
    config = config or model.peft_config[model.active_adapter]
    if name in model.peft_config:
        if model.active_adapter == name:
            others = [a for a in model.peft_config if a != name]
            if not others:
                raise ValueError(f"{name!r} is the model's only adapter: add the new one under another name.")
            model.set_adapter(others[0])
        model.delete_adapter(name)
    model.add_adapter(name, config)
    result = set_peft_model_state_dict(model, dict(start), adapter_name=name)
    missing = [k for k in getattr(result, "missing_keys", []) if f".{name}." in k]
    if missing:
        raise ValueError(f"start does not fit adapter {name!r}: {len(missing)} weights missing (first: {missing[0]}). "
                         "Pass adapter_start() of an adapter with the same LoraConfig.")
    model.set_adapter(name)
    return model


# ---------------------------------------------------------------------------------------------
# The loop


def train_dpo(model, pairs: Sequence[Mapping], cfg: TrainConfig | None = None, *, beta: float = 0.1,
              ref_model=None, pad_token_id: int = 0, eval_fn=None, progress: bool = True, **overrides):
    """DPO with :func:`ftlab.train.train`: returns ``(history, log)``.

    ``pairs``: tokenized pairs (:func:`tokenize_pairs`). Each micro-batch is one forward of the
    policy and one of the reference (adapter disabled, or ``ref_model``). ``history`` is train's
    (``history.losses`` = the DPO loss per step, averaged over the step's pairs); ``log`` holds one
    dict per optimizer step with ``step``, ``loss`` and TRL's four reward metrics, measured in
    that step's forward pass (before its update, as TRL logs them) and averaged over all the
    step's pairs (every micro-batch, every process): the loss function hands them to ``train``
    as sums, ``history.steps[i].metrics``. A resumed run's log holds the steps before the resume too.

    Refused before step 1: untokenized or one-sided pairs, and a ``ref_model`` that is the policy
    (or shares its trainable weights), whose loss would stay at log 2.
    """
    dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), beta)  # bad beta: fail now
    pairs = list(pairs)
    if not pairs:
        raise ValueError("train_dpo got no pairs: pass the tokenized training pairs from tokenize_pairs().")
    _check_pairs("train_dpo", pairs)
    _check_separate_reference(model, ref_model)

    def loss_fn(m, batch):
        loss, chosen_rewards, rejected_rewards = dpo_batch(m, batch, beta, ref_model)
        # train() wants SUMS over the items (pairs): it averages them over each step's window
        return loss * chosen_rewards.numel(), reward_sums(chosen_rewards, rejected_rewards)

    def count_fn(batch):
        return batch["input_ids"].shape[0] // 2

    history = train(model, pairs, cfg, loss_fn=loss_fn, count_fn=count_fn,
                    collate_fn=lambda rows: collate_pairs(rows, pad_token_id), eval_fn=eval_fn,
                    progress=progress, **overrides)
    log = [{"step": rec.step, "loss": rec.loss, **rec.metrics} for rec in history.steps]
    return history, log


def _check_separate_reference(model, ref_model) -> None:
    """The reference must not move with the policy: if it shares a trainable weight, every
    log-ratio stays 0, the loss stays at log 2 = 0.693 and the gradient is that of a constant."""
    if ref_model is None:
        return
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    shared = ref_model is model or any(id(p) in trainable for p in ref_model.parameters())
    if shared:
        raise ValueError(
            "ref_model is the policy itself (or shares its trainable weights): the reference would "
            "move with every update, so each log-ratio pi - pi_ref stays 0 and the loss stays at "
            f"log 2 = {math.log(2):.3f}. Pass a frozen copy made before training "
            "(ref_model = copy.deepcopy(model).eval().requires_grad_(False)), or ref_model=None with a "
            "peft model: its adapter switched off is the reference."
        )
