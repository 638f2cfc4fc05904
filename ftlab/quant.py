"""NF4 from scratch: the 4-bit NormalFloat data type of QLoRA, proven equal to bitsandbytes.

The idea in three steps:

1. **Blockwise absmax scaling.** Cut the weight into blocks of ``blocksize`` numbers (64 by
   default), divide each block by its largest magnitude (its *absmax*), so every value lies in
   [-1, 1]. One outlier then only coarsens its own block.
2. **A codebook shaped like the weights.** Trained weights are roughly normal, so instead of 16
   evenly spaced levels NF4 places its 16 levels at quantiles of a standard normal: each level is
   used about equally often. Each weight is stored as the 4-bit *index* of its nearest level.
3. **Double quantization.** The fp32 absmax of every 64 weights costs 32/64 = 0.5 bit per
   weight. Quantizing those scales to 8 bits (in blocks of 256, after removing their mean) brings
   that to about 0.127 bit.

``quantize_nf4`` / ``dequantize_nf4`` do steps 1-3; ``NF4Linear`` is a frozen linear layer that
keeps only the packed codes and dequantizes on the fly in ``forward``, which is what
``ftlab.lora.LoRALinear`` wraps for QLoRA by hand. ``tests/test_quant.py`` checks the codebook,
the 4-bit indices, the packing and the dequantized weights against
``bitsandbytes.functional.quantize_4bit`` / ``dequantize_4bit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["NF4_CODEBOOK", "NF4_OFFSET", "CHUNK", "nf4_codebook", "int4_codebook", "fp4_codebook",
           "NF4Tensor", "QuantizedScales", "quantize_nf4", "dequantize_nf4", "quantize_with_codebook", "dequantize_with_codebook",
           "CodebookErrors", "codebook_errors", "working_set_bytes",
           "quantize_int8", "dequantize_int8", "quantize_scales", "dequantize_scales",
           "NF4Linear", "replace_linears_with_nf4", "qlora_layer_pair", "require_bitsandbytes", "bits_per_parameter"]

# The outermost quantile NF4 uses. A normal's quantile function is infinite at 0 and 1, so the
# grid stops short of the ends: halfway between 1 - 1/(2*15) and 1 - 1/(2*16) (the two halves
# have 8 and 7 non-zero levels, hence 15 and 16), i.e. 0.96770833..., which the QLoRA reference
# code writes with seven digits. We use the same seven digits, so the levels match bit for bit.
NF4_OFFSET = 0.9677083


def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, sorted, in [-1, 1], with an exact zero.

    Normal quantiles at evenly spaced probabilities from 0.5 to ``offset``: 8 positive levels and
    7 negative ones (asymmetric, so that 0 is a level and 16 values are used), scaled so the
    largest magnitude on each side is 1.
    """
    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset must be a probability in (0.5, 1), got {offset}")
    # the probability grid in float32, as the reference implementation builds it
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double())   # 8 levels > 0
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double())  # 7 levels < 0
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float().sort().values
    return levels / levels.max()


NF4_CODEBOOK = nf4_codebook()
ZERO_CODE = int((NF4_CODEBOOK == 0).nonzero())  # 7: the level that is exactly zero
# Values the quantizer works on at once (2**20: whole blocks of 64 or 256). Quantizing a 1B model's
# weights in one go would hold several copies of all of them (a float32 copy, the scaled values,
# int64 indices: ~20 GB); in slices, each temporary is a few MiB.
CHUNK = 1 << 20


def int4_codebook() -> torch.Tensor:
    """Uniform symmetric 4-bit levels k/7, k = -7..7 (15 levels; absmax int4)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def fp4_codebook() -> torch.Tensor:
    """The 4-bit float E2M1 (sign, 2 exponent bits, 1 mantissa bit): +-{0, .5, 1, 1.5, 2, 3, 4, 6}, scaled to [-1, 1]."""
    magnitudes = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]) / 6.0
    return torch.cat([-magnitudes.flip(0)[:-1], magnitudes])


# -- checks -----------------------------------------------------------------------------------

def _check_blocksize(blocksize, name: str = "blocksize") -> int:
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize <= 0:
        raise ValueError(f"{name} must be a positive integer (64 is NF4's usual block), got {blocksize!r}")
    return blocksize


def _check_weight(weight) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor weight, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"can only quantize floating-point weights (float32/float16/bfloat16), got {weight.dtype}; "
                        "it looks already quantized")
    if weight.numel() == 0:
        raise ValueError("cannot quantize an empty tensor")
    flat = weight.detach().reshape(-1)
    bad = sum(int((~torch.isfinite(flat[i:i + CHUNK])).sum()) for i in range(0, flat.numel(), CHUNK))
    if bad:
        raise ValueError(f"the weight has {bad} NaN/inf value(s) (of {weight.numel()}); quantizing them would "
                         "silently poison a whole block. Fix the weights (or the training run) first")
    return weight


def _chunk(blocksize: int, chunk: int | None) -> int:
    """Values per slice: ``chunk`` (default :data:`CHUNK`) rounded down to whole blocks, at least one block."""
    chunk = CHUNK if chunk is None else chunk
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive integer number of values, got {chunk!r}")
    return max(blocksize, chunk // blocksize * blocksize)


# -- blockwise absmax --------------------------------------------------------------------------

def _blocks(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block absmax and values scaled into [-1, 1]. A last, shorter block (when the size is
    not a multiple of ``blocksize``) gets its own absmax, as bitsandbytes does: no padding is stored."""
    n = flat.numel()
    n_blocks = math.ceil(n / blocksize)
    extra = n_blocks * blocksize - n
    padded = (F.pad(flat, (0, extra)) if extra else flat).view(n_blocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    # multiply by the reciprocal (not divide): the same float arithmetic as bitsandbytes, so a
    # value that sits exactly on a decision boundary lands in the same bucket
    scaled = (padded * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)).clamp_(-1, 1)
    return absmax, scaled.reshape(-1)[:n]


def _boundaries(codebook: torch.Tensor, device) -> torch.Tensor:
    """Decision boundaries halfway between neighbouring levels (float32, as bitsandbytes' tree)."""
    codebook = codebook.to(device, torch.float32)
    return (codebook[:-1] + codebook[1:]) / 2


def _quantize_slice(part: torch.Tensor, boundaries: torch.Tensor, blocksize: int):
    """One slice of whole blocks (float32): its absmax per block and the int32 index of each value's level."""
    absmax, scaled = _blocks(part, blocksize)
    return absmax, torch.bucketize(scaled, boundaries, out_int32=True)


def _dequantize_slice(indices: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor, blocksize: int):
    """Level times its block's absmax for one slice of whole blocks (float32)."""
    values = levels[indices.int()]  # look up each 4-bit code
    n = values.numel()
    extra = absmax.numel() * blocksize - n
    blocks = (F.pad(values, (0, extra)) if extra else values).view(-1, blocksize)
    return blocks.mul_(absmax.unsqueeze(1)).view(-1)[:n]  # times its block's absmax


def quantize_with_codebook(weight: torch.Tensor, codebook: torch.Tensor, blocksize: int = 64,
                           chunk: int | None = None):
    """Blockwise absmax + nearest level of any sorted ``codebook``: ``(indices, absmax)``.

    "Nearest" is computed with decision boundaries halfway between neighbouring levels; a value
    exactly on a boundary goes to the lower level. The work runs on ``weight``'s device in slices
    of ``chunk`` values (:data:`CHUNK`, whole blocks), so its temporaries (a float32 copy, the
    scaled values, the indices) stay bounded whatever the weight's size; the result is the same.
    """
    _check_blocksize(blocksize)
    flat = _check_weight(weight).detach().reshape(-1)  # a view: no float32 copy of the whole weight
    step, n = _chunk(blocksize, chunk), flat.numel()
    boundaries = _boundaries(codebook, flat.device)
    indices = torch.empty(n, dtype=torch.uint8, device=flat.device)
    absmax = torch.empty(math.ceil(n / blocksize), dtype=torch.float32, device=flat.device)
    for start in range(0, n, step):
        scales, idx = _quantize_slice(flat[start:start + step].float(), boundaries, blocksize)
        absmax[start // blocksize:start // blocksize + scales.numel()] = scales
        indices[start:start + idx.numel()] = idx
    return indices.view(weight.shape), absmax


def dequantize_with_codebook(indices, absmax, codebook, blocksize: int = 64, dtype: torch.dtype = torch.float32,
                             chunk: int | None = None) -> torch.Tensor:
    """Inverse of :func:`quantize_with_codebook`: each index's level times its block's absmax,
    computed in float32 slice by slice and written into one tensor of ``dtype``."""
    flat = indices.reshape(-1)
    step, n = _chunk(blocksize, chunk), flat.numel()
    levels = codebook.to(absmax.device, torch.float32)
    out = torch.empty(n, dtype=dtype, device=absmax.device)
    for start in range(0, n, step):
        first = start // blocksize
        part = flat[start:start + step]
        out[start:start + part.numel()] = _dequantize_slice(
            part.to(absmax.device), absmax[first:first + math.ceil(part.numel() / blocksize)], levels, blocksize)
    return out.view(indices.shape)


@dataclass
class CodebookErrors:
    """What :func:`codebook_errors` measured: the relative MSE per codebook and what it streamed."""

    relative_mse: dict[str, float]  # mean squared round-trip error / variance of all the weights
    numel: int                      # weights measured
    tensors: int                    # tensors streamed, one at a time
    largest: int                    # values in the largest of them

    def __getitem__(self, name: str) -> float:
        return self.relative_mse[name]


def codebook_errors(weights, codebooks: dict, blocksize: int = 64, chunk: int | None = None) -> CodebookErrors:
    """The relative MSE of a blockwise 4-bit round trip with each of ``codebooks`` ({name: levels}),
    over every tensor of ``weights`` (any iterable: a generator over a model's layers works), streamed.

    Each tensor is quantized in its own blocks (as bitsandbytes quantizes each weight matrix), on
    its own device, slice by slice: nothing is concatenated and no tensor is copied whole, so the
    memory this takes is a few slices of ``chunk`` values (:func:`working_set_bytes`), whatever the
    model's size. Returns ``sum of squared errors / count / variance``, the variance (unbiased)
    over all the weights; when every tensor's size is a multiple of ``blocksize`` the blocks are
    those of the concatenated weights, so this equals the same measure on their concatenation.
    """
    if not codebooks:
        raise ValueError("codebooks is empty: pass {name: sorted levels}, e.g. {'NF4': quant.NF4_CODEBOOK}")
    _check_blocksize(blocksize)
    step = _chunk(blocksize, chunk)
    sse = dict.fromkeys(codebooks, 0.0)
    total = squares = 0.0
    count = tensors = largest = 0
    with torch.no_grad():
        for weight in weights:
            flat = _check_weight(weight).detach().reshape(-1)
            tensors, largest, count = tensors + 1, max(largest, flat.numel()), count + flat.numel()
            tables = {name: (_boundaries(cb, flat.device), cb.to(flat.device, torch.float32))
                      for name, cb in codebooks.items()}
            for start in range(0, flat.numel(), step):
                part = flat[start:start + step].float()
                total += part.sum().item()  # per slice in float32, across slices in float64
                squares += torch.dot(part, part).item()
                for name, (boundaries, levels) in tables.items():
                    absmax, idx = _quantize_slice(part, boundaries, blocksize)
                    diff = _dequantize_slice(idx, absmax, levels, blocksize).sub_(part)
                    del idx
                    sse[name] += torch.dot(diff, diff).item()
                    del diff
    if count < 2:
        raise ValueError(f"codebook_errors needs at least 2 weights to measure a variance, got {count}")
    variance = (squares - total * total / count) / (count - 1)
    return CodebookErrors({name: err / count / variance for name, err in sse.items()}, count, tensors, largest)


# What one slice holds, per value, at the worst moment of codebook_errors: the float32 slice (4),
# then either its absolute or scaled values and the int32 indices (4 + 4), or the indices, the
# looked-up levels and their product with the scales (4 + 4 + 4); 24 leaves room for the
# allocator. tests/test_quant.py measures the peak against it.
SLICE_BYTES_PER_VALUE = 24


def working_set_bytes(chunk: int | None = None, blocksize: int = 64) -> int:
    """Bytes of temporaries the streamed quantizer holds at once: ``chunk`` values (whole blocks)
    x :data:`SLICE_BYTES_PER_VALUE`. The bound :func:`codebook_errors` keeps, whatever the model."""
    return _chunk(_check_blocksize(blocksize), chunk) * SLICE_BYTES_PER_VALUE


# -- int8, for the lesson's first step and for double quantization ---------------------------

def quantize_int8(x: torch.Tensor, blocksize: int | None = None):
    """Absmax int8: ``round(127 * x / absmax)``; per tensor (``blocksize=None``) or per block.
    Returns ``(int8 codes with x's shape, float32 absmax per block)``."""
    flat = _check_weight(x).detach().reshape(-1).float()
    size = flat.numel() if blocksize is None else _check_blocksize(blocksize)
    absmax, scaled = _blocks(flat, size)
    return torch.round(scaled * 127).to(torch.int8).view(x.shape), absmax


def dequantize_int8(codes: torch.Tensor, absmax: torch.Tensor, blocksize: int | None = None) -> torch.Tensor:
    size = codes.numel() if blocksize is None else blocksize
    per_value = absmax.repeat_interleave(size)[: codes.numel()]
    return (codes.reshape(-1).float() / 127 * per_value).view(codes.shape)


@dataclass
class QuantizedScales:
    """Double quantization of the absmax scales: int8 codes in blocks, one fp32 scale per block,
    and the mean that was removed first (scales are all positive; centring them uses all 256
    int8 levels instead of half)."""

    codes: torch.Tensor   # int8, one per absmax
    scales: torch.Tensor  # float32, one per block of `blocksize` absmax values
    mean: float
    blocksize: int

    def nbytes(self) -> int:
        return self.codes.numel() + 4 * self.scales.numel() + 4


def quantize_scales(absmax: torch.Tensor, blocksize: int = 256) -> QuantizedScales:
    mean = absmax.float().mean().item()
    codes, scales = quantize_int8(absmax.float() - mean, blocksize)
    return QuantizedScales(codes, scales, mean, blocksize)


def dequantize_scales(q: QuantizedScales) -> torch.Tensor:
    return dequantize_int8(q.codes, q.scales, q.blocksize) + q.mean


# -- NF4 ---------------------------------------------------------------------------------------

@dataclass
class NF4Tensor:
    """A weight in NF4: one 4-bit level index per element (stored here one per uint8, unpacked,
    for clarity; :meth:`packed` gives the two-per-byte storage), and the per-block scales, either
    fp32 (``absmax``) or double-quantized (``scales``)."""

    codes: torch.Tensor          # uint8 in 0..15, same shape as the weight
    absmax: torch.Tensor         # float32, one per block (dequantized, if double quantization is on)
    blocksize: int
    dtype: torch.dtype           # the weight's dtype, restored by dequantize_nf4
    scales: QuantizedScales | None = None  # set when double quantization is on

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    def packed(self) -> torch.Tensor:
        """Two codes per byte, the first in the high nibble (bitsandbytes' layout). An odd count
        is padded with the code of 0.0 (index 7), as bitsandbytes pads with a zero value."""
        flat = self.codes.reshape(-1)
        if flat.numel() % 2:
            flat = F.pad(flat, (0, 1), value=ZERO_CODE)
        return (flat[0::2] << 4) | flat[1::2]

    def nbytes(self) -> int:
        """Bytes stored: packed codes plus the scales (fp32, or their double quantization)."""
        scales = self.scales.nbytes() if self.scales is not None else 4 * self.absmax.numel()
        return self.packed().numel() + scales

    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes() / self.codes.numel()


def unpack(packed: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :meth:`NF4Tensor.packed`."""
    flat = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    return flat[: math.prod(shape)].view(shape)


def quantize_nf4(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = False,
                 scale_blocksize: int = 256) -> NF4Tensor:
    """Quantize ``weight`` to NF4 in blocks of ``blocksize``; optionally double-quantize the scales."""
    codes, absmax = quantize_with_codebook(weight, NF4_CODEBOOK, blocksize)
    scales = None
    if double_quant:
        scales = quantize_scales(absmax, _check_blocksize(scale_blocksize, "scale_blocksize"))
        absmax = dequantize_scales(scales)
    return NF4Tensor(codes, absmax, blocksize, weight.dtype, scales)


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Level times its block's absmax, in the weight's dtype (or ``dtype``)."""
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"expected the NF4Tensor returned by quantize_nf4, got {type(q).__name__}")
    return dequantize_with_codebook(q.codes, q.absmax, NF4_CODEBOOK, q.blocksize, dtype=dtype or q.dtype)


def bits_per_parameter(blocksize: int = 64, double_quant: bool = False, scale_blocksize: int = 256) -> float:
    """Bits NF4 stores per weight, scales included, for a large weight: 4 + 32/64 = 4.5 without
    double quantization; 4 + 8/64 + 32/(64*256) = 4.127 with it."""
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * scale_blocksize)
    return 4 + 32 / blocksize


# -- bitsandbytes, optional ---------------------------------------------------------------------

QUANT_INSTALL = "pip install 'ftlab[quant]'"


def require_bitsandbytes(what: str):
    """Import bitsandbytes, or raise an ImportError that says what needs it and how to install it.

    bitsandbytes is ftlab's optional ``quant`` extra (lessons 04 and 07): the 4-bit loading of
    QLoRA and the 8-bit optimizers. ``what`` names the feature that asked, for the message.
    """
    try:
        import bitsandbytes
    except ImportError as exc:  # absent, or present but broken (its error is kept below)
        raise ImportError(
            f"{what} needs bitsandbytes, which is not importable here ({exc}). Install ftlab's quant extra: "
            f"{QUANT_INSTALL} (or pip install bitsandbytes), then restart the runtime. Without it, use "
            "optimizer='adamw' and load models unquantized.") from exc
    return bitsandbytes


# -- a frozen 4-bit linear layer ---------------------------------------------------------------

class NF4Linear(nn.Module):
    """A frozen linear layer stored in NF4 (packed codes + scales) that dequantizes its weight on
    every forward, in the input's dtype. It has ``in_features`` / ``out_features`` like
    ``nn.Linear``, so ``ftlab.lora.LoRALinear`` can wrap it: that is QLoRA by hand. The bias, if
    any, stays in full precision (it is tiny)."""

    def __init__(self, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"NF4Linear quantizes an nn.Linear, got {type(linear).__name__}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q = quantize_nf4(linear.weight.data, blocksize, double_quant)
        self.blocksize, self.weight_dtype = blocksize, linear.weight.dtype
        self.register_buffer("packed_codes", q.packed())
        self.register_buffer("absmax", q.absmax.float())
        self.quantized_bytes = q.nbytes()
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.data.clone(), requires_grad=False)

    def nf4(self) -> NF4Tensor:
        codes = unpack(self.packed_codes, (self.out_features, self.in_features))
        return NF4Tensor(codes, self.absmax, self.blocksize, self.weight_dtype)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return dequantize_nf4(self.nf4(), dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight (a fresh tensor: the layer stores only codes and scales)."""
        return self.dequantized_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"blocksize={self.blocksize}, bias={self.bias is not None}")


def replace_linears_with_nf4(model: nn.Module, skip: tuple[str, ...] = ("lm_head",), blocksize: int = 64,
                             double_quant: bool = True) -> list[str]:
    """Swap every ``nn.Linear`` whose name does not end with one of ``skip`` for an
    :class:`NF4Linear`, in place. Returns the names replaced. Running it again changes nothing."""
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is nn.Linear and not name.split(".")[-1] in skip]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, NF4Linear(module, blocksize, double_quant))
    return [name for name, _ in targets]


# -- QLoRA by hand next to bitsandbytes + peft -------------------------------------------------

def qlora_layer_pair(linear: nn.Linear, r: int = 8, alpha: float = 16, blocksize: int = 64, device="cpu",
                     b_std: float = 0.02):
    """One linear layer under QLoRA, built twice on ONE device: ``(mine, theirs)``.

    ``mine`` is ``ftlab.lora.LoRALinear`` around an :class:`NF4Linear` (fp32 absmax, no double
    quantization); ``theirs`` is peft's LoRA ``Linear`` around bitsandbytes' ``Linear4bit``
    (quantized by bitsandbytes when it moves to ``device``). Both get the same A and B; B is drawn
    from N(0, ``b_std``) (global RNG) so the low-rank path is not zero, as if trained a little.

    ``linear`` may live anywhere, in any float dtype (the full profile's model sits on the GPU in
    fp16): a float32 copy is taken to ``device`` first and both layers are built from it, so the
    two layers, and the input you create with ``.to(device)``, share one device. The CPU is
    where tests/test_quant.py holds bitsandbytes to ftlab bit for bit.
    """
    from peft import LoraConfig
    from peft.tuners.lora import Linear as PeftLoraLinear

    from ftlab.lora import LoRALinear

    bnb = require_bitsandbytes("quant.qlora_layer_pair (bitsandbytes' Linear4bit)")
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"qlora_layer_pair takes an nn.Linear (a model's projection), got {type(linear).__name__}")
    device = torch.device(device)
    has_bias = linear.bias is not None
    source = nn.Linear(linear.in_features, linear.out_features, bias=has_bias, device="meta").to_empty(device=device)
    with torch.no_grad():
        source.weight.copy_(linear.weight.detach().to(device, torch.float32))
        if has_bias:
            source.bias.copy_(linear.bias.detach().to(device, torch.float32))
    mine = LoRALinear(NF4Linear(source, blocksize, double_quant=False), r=r, alpha=alpha)
    with torch.no_grad():
        mine.B.normal_(0.0, b_std)

    base4 = bnb.nn.Linear4bit(source.in_features, source.out_features, bias=has_bias, compute_dtype=torch.float32,
                              quant_type="nf4", compress_statistics=False, device="meta")
    base4.weight = bnb.nn.Params4bit(source.weight.detach().clone(), requires_grad=False, quant_type="nf4",
                                     blocksize=blocksize, compress_statistics=False)
    if has_bias:
        base4.bias = nn.Parameter(source.bias.detach().clone(), requires_grad=False)
    base4 = base4.to(device)  # bitsandbytes quantizes here, on `device`
    theirs = PeftLoraLinear(base4, "default", LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(mine.A)
        theirs.lora_B["default"].weight.copy_(mine.B)
    return mine, theirs
