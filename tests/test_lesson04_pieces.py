"""Lesson 04 writes blockwise absmax and the NF4 lookup itself: its cells equal ftlab.quant and
bitsandbytes bit for bit (ties between levels and the two-per-byte packing included), its NF4
drill names the usual bugs and comes before the lesson's own NF4, and its bytes drill is asked
before the cell that prints the answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ftlab import drills, quant
from lesson_cells import cell_index, code_cells

bnbf = pytest.importorskip("bitsandbytes.functional")

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "04_qlora.py"


pytestmark = pytest.mark.usefixtures("not_strict")  # drills report, never raise, here


@pytest.fixture(scope="module")
def cells() -> list[str]:
    return code_cells(LESSON.stem)


def _index(cells, needle: str) -> int:
    return cell_index(cells, needle, "lesson 04")


@pytest.fixture(scope="module")
def lesson_nf4(cells) -> dict:
    """The lesson's own cells that define blockwise_absmax, nf4_quantize and nf4_dequantize, run as they stand."""
    namespace = {"torch": torch, "quant": quant}
    exec(cells[_index(cells, "def blockwise_absmax")], namespace)
    exec(cells[_index(cells, "def nf4_quantize")], namespace)
    return namespace


def _weight_with_ties(dtype) -> torch.Tensor:
    """Random weights whose first block (absmax exactly 1) holds every midpoint between two NF4
    levels, the values where "nearest" is a tie; the second their negatives (no ties: the levels
    are not symmetric), the third an outlier."""
    w = torch.randn(384, 128, generator=torch.Generator().manual_seed(0)) * 0.02
    midpoints = (quant.NF4_CODEBOOK[:-1] + quant.NF4_CODEBOOK[1:]) / 2
    blocks = w.view(-1, 64)
    blocks[0, :15], blocks[0, 15] = midpoints, 1.0
    blocks[1, :15], blocks[1, 15] = -midpoints, -1.0
    blocks[2, 7] = 3.0  # an outlier in one block
    return w.to(dtype)


# -- the lesson's own NF4 -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lessons_nf4_equals_ftlab_and_bitsandbytes_bit_for_bit(lesson_nf4, dtype):
    weight = _weight_with_ties(dtype)
    codes, absmax = lesson_nf4["nf4_quantize"](weight, 64)
    assert codes.shape == (weight.numel() // 64, 64) and codes.dtype == torch.uint8 and absmax.shape == (codes.shape[0],)
    ours = quant.quantize_nf4(weight, 64)
    assert torch.equal(codes.flatten(), ours.codes.flatten()) and torch.equal(absmax, ours.absmax)
    packed, state = bnbf.quantize_4bit(weight, blocksize=64, quant_type="nf4")
    assert torch.equal(((codes[:, 0::2] << 4) | codes[:, 1::2]).flatten(), packed.flatten())  # high nibble first
    assert torch.equal(absmax, state.absmax)
    mine = lesson_nf4["nf4_dequantize"](codes, absmax).reshape(weight.shape).to(dtype)
    torch.testing.assert_close(mine, quant.dequantize_nf4(ours), rtol=0, atol=0)
    torch.testing.assert_close(mine, bnbf.dequantize_4bit(packed, state), rtol=0, atol=0)


def test_lessons_lookup_sends_a_tie_to_the_lower_level_where_argmin_does_not(lesson_nf4):
    """The test's weights do reach the ties: an argmin over float distances disagrees with
    bitsandbytes on some of them, the lesson's midpoint lookup on none."""
    weight = _weight_with_ties(torch.float32)
    codes, _ = lesson_nf4["nf4_quantize"](weight, 64)
    _, scaled = lesson_nf4["blockwise_absmax"](weight, 64)
    by_argmin = (scaled.unsqueeze(-1) - quant.NF4_CODEBOOK).abs().argmin(dim=-1)
    assert (by_argmin != codes.long()).sum() > 0
    assert codes[0, :15].tolist() == list(range(15))  # the midpoint of levels i and i + 1 goes to i


def test_lessons_blockwise_absmax_gives_ftlabs_int8_codes(lesson_nf4):
    w = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 0.02
    w[100] = 1.0
    for blocksize in (w.numel(), 64):
        absmax, scaled = lesson_nf4["blockwise_absmax"](w, blocksize)
        assert scaled.shape == (w.numel() // blocksize, blocksize) and scaled.abs().max() <= 1
        codes, ftlab_absmax = quant.quantize_int8(w, blocksize)
        assert torch.equal(torch.round(127 * scaled).flatten().to(torch.int8), codes)
        assert torch.equal(absmax, ftlab_absmax)


# -- the drills -----------------------------------------------------------------------------------

def _blocks(w):
    return w.reshape(-1, 64)


def _nearest(scaled, codebook):
    return (scaled.unsqueeze(-1) - codebook).abs().argmin(dim=-1)


def test_roundtrip_drill_names_each_usual_bug():
    """A global absmax, a uniform grid, a largest value instead of a largest magnitude, a lost sign
    and levels returned without their absmax: each fails 04b with its own hint (written here, not
    imported from the drill, so a hint that no longer matches its bug fails this test)."""
    def per_block(w, codebook, scale_of=lambda b: b.abs().amax(dim=1, keepdim=True)):
        scale = scale_of(_blocks(w))
        return (codebook[_nearest(_blocks(w) / scale, codebook)] * scale).reshape(w.shape)

    bugs = {
        "one per block of 64": lambda w, cb: cb[_nearest(w / w.abs().max(), cb)] * w.abs().max(),
        "uniform 4-bit grid": lambda w, cb: (torch.round(_blocks(w) / _blocks(w).abs().amax(1, keepdim=True) * 7) / 7
                                             * _blocks(w).abs().amax(1, keepdim=True)).reshape(w.shape),
        "largest magnitude": lambda w, cb: per_block(w, cb, scale_of=lambda b: b.amax(dim=1, keepdim=True)),
        "comes back positive": lambda w, cb: per_block(w.abs(), cb),
        "Multiply each by its block's absmax": lambda w, cb: cb[_nearest(
            _blocks(w) / _blocks(w).abs().amax(1, keepdim=True), cb)].reshape(w.shape),
    }
    for hint, bug in bugs.items():
        result = drills.check("04b", bug)
        assert result.status == "fail" and hint in result.message, (hint, result.message)
    assert drills.check("04b", per_block).passed


def test_bytes_drill_is_what_ftlab_stores_and_what_the_lesson_prints():
    """04a's answer is the bytes quant.quantize_nf4 stores for a 4096 x 4096 weight, and the
    double-quantization cell prints it as bits_per_parameter(64) x 4096**2 / 8."""
    stored = quant.quantize_nf4(torch.zeros(4096, 4096), 64).nbytes()
    assert drills.reference("04a") == stored == quant.bits_per_parameter(64) * 4096**2 / 8 == 9_437_184
    assert drills.check("04a", "9,437,184").passed
    assert "fp32 absmax" in drills.check("04a", 4096**2 // 2).message


# -- where things sit in the lesson ---------------------------------------------------------------

def test_drills_come_before_what_they_reveal(cells):
    """04b is checked before the lesson's NF4 cells, in the first two thirds of the lesson, and no
    cell uses ftlab's NF4 before the lesson wrote its own; 04a is checked before the cell that
    prints the bytes; the lesson's NF4 is compared with ftlab and bitsandbytes in one cell."""
    own = _index(cells, "def nf4_quantize")
    assert _index(cells, 'check("04b", answer_04b)') < own < 2 * len(cells) / 3
    assert _index(cells, "quant.quantize_nf4(") > own and _index(cells, "bnbf.quantize_4bit(") > own
    assert _index(cells, 'check("04a", answer_04a)') < _index(cells, "4096**2 / 8")
    comparison = cells[_index(cells, "nf4_quantize(weight")]
    assert "quant.quantize_nf4(weight" in comparison and "bnbf.quantize_4bit(weight" in comparison
    assert "max_diff" in comparison and "assert" in comparison
    assert "quant.dequantize_int8" not in "".join(cells)  # the int8 round trip is the lesson's own
