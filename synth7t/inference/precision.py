"""The numeric precision of a prediction: fp32, or bf16 autocast where the CPU has bf16 instructions and the network
is big enough to gain from them (an imported full-size network of the authors)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Tuple

__all__ = ["cpu_supports_bf16", "choose_precision", "inference_precision", "PRECISIONS", "FULL_SIZE_PARAMETERS"]

#: Parameters from which an imported network counts as full-size (the released ones have 222 M and 259 M): on a CPU
#: with bf16 instructions ``precision="auto"`` predicts it in bf16.
FULL_SIZE_PARAMETERS = 50_000_000
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_supports_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX or AVX-512 BF16; Linux's ``/proc/cpuinfo`` flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(precision: str, device, generator, meta: dict) -> Tuple[str, Optional[str]]:
    """The precision of a prediction and, when ``"auto"`` chose bf16, the one line that says so.

    ``"auto"``: bf16 autocast for an imported full-size network (:data:`FULL_SIZE_PARAMETERS`) on a CPU with bf16
    instructions (:func:`cpu_supports_bf16`), fp32 otherwise (synth7t's own small models gain little: 1.17x for
    the demo U-Net on 1 thread). ``"bf16"`` on a CPU without those instructions is refused (emulated, slower).

    Raises:
        ValueError: an unknown precision, or bf16 asked on a CPU without bf16 instructions.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    on_cpu = str(device).startswith("cpu")
    if precision == "bf16" and on_cpu and not cpu_supports_bf16():
        raise ValueError("precision bf16 needs a CPU with AMX or AVX-512 BF16 (without them bf16 is emulated and "
                         "slower than fp32); use --precision fp32")
    if precision != "auto":
        return precision, None
    imported = (meta.get("model_config") or {}).get("kind") == "gicquel-unet"
    n_params = sum(p.numel() for p in generator.parameters())
    if on_cpu and imported and n_params >= FULL_SIZE_PARAMETERS and cpu_supports_bf16():
        return "bf16", (f"bf16 autocast, channels-last: this CPU has bf16 instructions and the network has "
                        f"{n_params / 1e6:.0f} M parameters (--precision fp32 to turn it off)")
    return "fp32", None


@contextlib.contextmanager
def inference_precision(precision: str, device) -> Iterator[None]:
    """bf16 autocast around a prediction's forward passes for ``"bf16"``; nothing for ``"fp32"``."""
    import torch

    dev = torch.device(device) if not isinstance(device, torch.device) else device
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        yield
