"""Numeric precision of the models' convolutions: ``fp32 | bf16 | auto``.

``auto`` picks bf16 where the hardware computes bf16 natively and the model passed the parity check
(its class's ``auto_bf16``, set from ``benchmarks/precision_parity.py``); fp32 elsewhere. Native bf16:
a CPU with Intel AMX (``amx_bf16``) or with AVX-512 BF16 dot products (``avx512_bf16``: VDPBF16PS, which
oneDNN's bf16 convolutions use), or a CUDA GPU of compute capability 8.0 or newer. A CPU without either
flag would emulate bf16 (slower than fp32), so ``auto`` keeps fp32 there; an explicit ``bf16`` still runs
everywhere, so that CI on any CPU tests the path.

What runs in bf16 (torch autocast): the backbones' and the PDNs' convolutions and MemSeg's encoder,
fusion and decoder. What stays fp32, always: PatchCore's projection, coreset and nearest-neighbour
distances, SimpleNet's adaptor and discriminator, MemSeg's memory distances, EfficientAD's feature
differences and quantile normalisation, every loss and optimiser state, and every metric.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "auto")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return frozenset()
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


#: CPU flags of native bf16 arithmetic: AMX tiles, or AVX-512 BF16 dot products
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16(device: str = "cpu", flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` computes bf16 natively (AMX or AVX-512 BF16 on a CPU, sm80+ on CUDA)."""
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return False
        index = torch.device(device).index or 0
        return torch.cuda.get_device_capability(index)[0] >= 8
    have = cpu_flags() if flags is None else flags
    return any(f in have for f in NATIVE_BF16_FLAGS)


def resolve(
    precision: str, device: str = "cpu", flags: frozenset[str] | None = None, model_allows: bool = True
) -> str:
    """``fp32`` or ``bf16``: ``auto`` becomes bf16 only on native bf16 hardware and for a model whose
    parity held (``model_allows``); an explicit choice is kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if model_allows and native_bf16(device, flags) else "fp32"
    return precision


def autocast(precision: str, device="cpu"):
    """A torch autocast context for bf16 on ``device``'s type; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"precision must be 'fp32' or 'bf16' here (resolve 'auto' first), got {precision!r}")
    import torch

    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


def fp32(device="cpu"):
    """A region that stays fp32 inside an autocast one (distances, scores, losses)."""
    import torch

    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    return torch.autocast(device_type=kind, enabled=False)


def set_module_precision(module, precision: str) -> list[str]:
    """Set ``precision`` on every submodule that has the attribute (feature extractors, MemSeg, EfficientAD);
    returns their previous values, in ``module.modules()`` order (for ``restore_module_precision``)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    before = []
    for m in module.modules():
        if hasattr(m, "precision"):
            before.append(m.precision)
            m.precision = precision
    return before


def restore_module_precision(module, before: list[str]) -> None:
    """Undo ``set_module_precision``."""
    it = iter(before)
    for m in module.modules():
        if hasattr(m, "precision"):
            m.precision = next(it)


@contextlib.contextmanager
def module_precision(module, precision: str):
    """Run ``module`` at ``precision`` inside the block (the ONNX export traces fp32, say)."""
    before = set_module_precision(module, precision)
    try:
        yield module
    finally:
        restore_module_precision(module, before)


def _cpuinfo_field(name: str) -> str:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return ""
    for line in path.read_text(errors="replace").splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return ""


def peak_gflops(
    flags=None, vendor: str | None = None, family: int | None = None, mhz: float | None = None
) -> dict:
    """Physical peak per core at the nominal clock (``cpu MHz``), in GFLOP/s, and the rule it used.

    fp32: FLOP per cycle of the FMA units: 64 for AVX-512 on Intel (two 512-bit FMA), 32 for AVX-512 on
    AMD Zen 4 (family 25: 512-bit ops run as two 256-bit halves on two 256-bit FMA pipes) and for
    AVX2 + FMA, 8 otherwise. bf16: 1024 with AMX (TDPBF16PS, 16x16x32 per 16 cycles), twice the fp32
    rate with AVX-512 BF16 (VDPBF16PS: two bf16 products per fp32 lane), none without either (emulated).
    A turbo clock above ``cpu MHz`` raises both; the ratios hold."""
    f = cpu_flags() if flags is None else flags
    vendor = _cpuinfo_field("vendor_id") if vendor is None else vendor
    if family is None:
        fam = _cpuinfo_field("cpu family")
        family = int(fam) if fam.isdigit() else 0
    if mhz is None:
        try:
            mhz = float(_cpuinfo_field("cpu MHz") or "nan")
        except ValueError:
            mhz = float("nan")
    if "avx512f" in f:
        fp32 = 32 if vendor == "AuthenticAMD" and family == 25 else 64
    elif "avx2" in f and "fma" in f:
        fp32 = 32
    else:
        fp32 = 8
    if "amx_bf16" in f:
        bf16, bf16_rule = 1024, "AMX tiles"
    elif "avx512_bf16" in f:
        bf16, bf16_rule = 2 * fp32, "AVX-512 BF16 dot products (2x fp32)"
    else:
        bf16, bf16_rule = 0, "none (bf16 emulated)"
    ghz = mhz / 1000.0
    return {
        "ghz": ghz,
        "fp32_flop_per_cycle": fp32,
        "bf16_flop_per_cycle": bf16,
        "fp32_gflops": fp32 * ghz,
        "bf16_gflops": bf16 * ghz,
        "rule": f"fp32 {fp32} FLOP/cycle ({vendor or 'unknown vendor'}, family {family}); bf16: {bf16_rule}",
    }


def describe(flags: frozenset[str] | None = None) -> str:
    """One line: the CPU's bf16-relevant flags and what ``auto`` picks on it (for a model that allows it)."""
    f = cpu_flags() if flags is None else flags
    shown = [
        x for x in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8") if x in f
    ]
    pick = (
        "bf16 for models whose parity held (auto_bf16), else fp32"
        if resolve("auto", "cpu", f) == "bf16"
        else "fp32"
    )
    if "amx_bf16" in f:
        units = "AMX bf16 matrix units"
    elif "avx512_bf16" in f:
        units = "AVX-512 BF16 dot products, no AMX"
    else:
        units = "no native bf16 (emulated: slower than fp32)"
    return f"CPU flags {', '.join(shown) or 'none of avx512f/avx512_bf16/amx'}: {units}; auto: {pick}"
