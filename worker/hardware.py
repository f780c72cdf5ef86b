"""The hardware an engine runs on: device and dtype choice, bfloat16 support, int8
quantization, token budgets by device, giving freed memory back to the OS (CPU), and
pinned host buffers (CUDA).

Kept apart from the reader (`docqa.worker.engine`) so the QA logic reads without the
machine's quirks. torch is imported inside the functions that need it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Iterable

import numpy as np

from docqa.worker.loading import ModelLoadError


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but no CUDA GPU is available")
    return device


def resolve_dtype(dtype: str, device: str):
    """float32 on CPU; bfloat16 (or float16 where bf16 is unsupported) on GPU."""
    import torch

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    if device == "cpu" and dtype == "float16":
        # CPUs have no fast float16 matmul: it runs several times slower than float32.
        raise ModelLoadError("float16 on the CPU is several times slower than float32; use dtype float32")
    if device == "cpu" and dtype == "bfloat16" and not cpu_has_bf16():
        # Without AVX512-BF16 / AMX, bfloat16 matmuls are emulated: slower than float32.
        raise ModelLoadError(
            "bfloat16 on this CPU is slower than float32: it has no bfloat16 instructions "
            "(AVX512-BF16 or AMX); use dtype float32, or quantize int8 for a faster CPU mode"
        )
    return names[dtype]


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX-BF16)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    if probes:
        return any(probe() for probe in probes)
    try:  # an older or newer torch without the probes: ask the kernel
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_features() -> set[str]:
    """'amx', 'avx512_vnni', 'avx512_bf16', 'avx2': what decides the fastest CPU mode, from
    torch's probes (where this torch has them) and /proc/cpuinfo (where the OS has one)."""
    import torch

    probes = {"amx": "_is_amx_tile_supported", "avx512_vnni": "_is_vnni_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "avx2": "_is_avx2_supported"}
    found = {name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = set(next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), []))
    except OSError:
        flags = set()
    found |= {"amx"} if {"amx_tile", "amx_bf16"} & flags else set()
    return found | ({"avx512_vnni", "avx512_bf16", "avx2"} & flags)


def fast_mode(features: Iterable[str], device: str = "cpu") -> tuple[str, str, str]:
    """What --fast runs on `device` (resolved: 'cpu', 'cuda', 'cuda:N', ...) when its CPU has
    `features` (names as `cpu_features()` gives them): (dtype, quantize, why). A pure
    function of its arguments. The choices follow docs/BENCHMARKS.md ("CPU fast mode"):

    - AMX: bfloat16 (3.8x the pipeline on an Intel Xeon with AMX, twice int8's speed);
    - AVX512-VNNI without AMX: int8 (AMD Zen 4: int8 2.4x the pipeline, bfloat16 1.7x);
    - AVX512-BF16 without VNNI or AMX: bfloat16;
    - AVX2 only: int8 (AMD EPYC Zen 3: 1.64-1.82x the pipeline; bfloat16 is emulated, 6.4x slower);
    - anything else: float32 (no faster mode was measured);
    - a CUDA GPU: docqa's GPU default, bfloat16 (float16 on GPUs without bfloat16).
    """
    if device.startswith("cuda"):
        return "auto", "none", "a CUDA GPU: half precision, docqa's GPU default"
    if device != "cpu":
        return "auto", "none", f"no faster mode is known for device {device}"
    has = set(features)
    if "amx" in has:
        return "bfloat16", "none", "this CPU has AMX"
    if "avx512_vnni" in has:
        return "float32", "int8", "this CPU has AVX512-VNNI, no AMX"
    if "avx512_bf16" in has:
        return "bfloat16", "none", "this CPU has AVX512-BF16, no AMX or VNNI"
    if "avx2" in has:
        return "float32", "int8", "this CPU has AVX2, no AVX-512 VNNI or AMX"
    return "float32", "none", "no mode faster than float32 was measured on CPUs without AVX2"


def mode_name(dtype: str, quantize: str) -> str:
    """'int8', or the dtype ('auto' stays 'auto')."""
    return "int8" if quantize == "int8" else dtype


def apply_fast(dtype: str, quantize: str, device: str) -> tuple[str, str, str]:
    """--fast on `device` (resolved): (dtype, quantize, the one line that says what it chose).

    A dtype other than `auto` or a quantize other than `none` (a flag or DOCQA_DTYPE /
    DOCQA_QUANTIZE) was asked for by the user: it wins, and the line says so.
    """
    fast_dtype, fast_quantize, why = fast_mode(cpu_features() if device == "cpu" else (), device)
    given = [f"--dtype {dtype}"] * (dtype != "auto") + [f"--quantize {quantize}"] * (quantize != "none")
    if given:
        return dtype, quantize, (f"--fast: {' and '.join(given)} given, which wins over --fast (it would pick "
                                 f"{mode_name(fast_dtype, fast_quantize)} here: {why})")
    chosen = mode_name(fast_dtype, fast_quantize)
    if chosen == "auto":  # by device: name what it resolves to
        chosen = str(resolve_dtype("auto", device)).removeprefix("torch.")
    return fast_dtype, fast_quantize, f"--fast: {chosen} ({why})"


def faster_cpu_mode() -> tuple[str, str] | None:
    """(the mode --fast picks on this CPU, why) when it is not float32; else None."""
    dtype, quantize, why = fast_mode(cpu_features())
    name = mode_name(dtype, quantize)
    return None if name == "float32" else (name, why)


# Token budget of one forward (windows x padded length) when none is given. On a CPU a few
# windows a batch run fastest (they stay in the caches: 4 windows of 384 tokens ran 11%
# faster in float32 and 20% in bfloat16 than 21 windows, benchmarks/run.py --sweep) and
# keep memory low; a GPU wants hundreds of windows a batch to fill its cores.
CPU_BATCH_TOKENS = 1536
GPU_BATCH_TOKENS = 131072  # 341 windows of 384 tokens: a worker batch of 64 jobs in one forward


# On a CPU, freed activation memory stays in glibc's heap and RSS creeps up over a long run
# (1.5 GiB after 60 questions where the model is 0.35 GiB). Giving it back to the OS at most
# every this many seconds cut peak RSS by ~20% with no measurable slowdown (a trim after
# every few forwards cut more but cost ~2%). Settings.trim_seconds overrides; 0 switches it off.
TRIM_SECONDS = 10.0


_LIBC = None  # glibc, once loaded; False where it cannot be


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (glibc's malloc_trim); False where unavailable."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 (glibc only: AttributeError elsewhere)
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


class HeapTrimmer:
    """On a CPU, hands freed activation memory back to the OS at most every `seconds`."""

    def __init__(self, seconds: float = TRIM_SECONDS) -> None:
        if seconds < 0:
            raise ValueError(f"trim seconds must be 0 (off) or positive, got {seconds}")
        self.seconds = seconds
        self.trims = 0  # times memory was given back so far
        self._last = time.monotonic()

    def maybe_trim(self) -> None:
        if self.seconds <= 0:
            return
        now = time.monotonic()
        if now - self._last >= self.seconds:
            if malloc_trim():
                self.trims += 1
            self._last = now


class PinnedBuffers:
    """Host arrays copied to a CUDA device through reused page-locked buffers, one per slot.

    The copy is asynchronous, so a slot must not be written again before its last copy
    ran: the engine alternates two sets of slots between batches, and writes a set only
    after the batch that last used it was collected (its event passed, so its copies
    in were done). On any other device the array is handed over as it is.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._buffers: dict[int, object] = {}

    def to_device(self, array: np.ndarray, slot: int):
        import torch

        tensor = torch.from_numpy(array)
        if not str(self.device).startswith("cuda"):
            return tensor
        need = tensor.numel()
        buf = self._buffers.get(slot)
        if buf is None or buf.numel() < need:
            buf = self._buffers[slot] = torch.empty(max(need, 1 << 16), dtype=tensor.dtype).pin_memory()
        staged = buf[:need].view(tensor.shape)
        staged.copy_(tensor)
        return staged.to(self.device, non_blocking=True)


def quantize_int8(model):
    """Dynamic int8 quantization of the Linear layers (CPU), in place: the float32 weights
    are dropped rather than kept beside the int8 copy.

    Each Linear becomes what `torch.ao.quantization.quantize_dynamic(model, {nn.Linear},
    dtype=qint8)` makes of it (`DynamicQuantizedLinear.from_float` with the default dynamic
    qconfig: the same int8 weights, the same answers, tested), but the layers are quantized
    on torch's threads at once: the work (min/max, quantizing, fbgemm packing) runs outside
    the GIL, so quantizing the full-size DistilBERT took 0.43 s here instead of 1.0 s.
    A model with hooks on its Linear layers goes through `quantize_dynamic` itself.

    torch marks its quantized-tensor API deprecated (still working in 2.13); the warning
    is silenced here because the user asked for this mode explicitly.
    """
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import torch

    linears = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is torch.nn.Linear]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        if any(child._forward_hooks or child._forward_pre_hooks for _, _, child in linears):
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
        from torch.ao.quantization import default_dynamic_qconfig

        def quantized(child):
            child.qconfig = default_dynamic_qconfig  # what quantize_dynamic's propagation sets
            return DynamicQuantizedLinear.from_float(child)

        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            for (parent, name, child), new in zip(linears, pool.map(quantized, [c for _, _, c in linears])):
                new.train(child.training)
                setattr(parent, name, new)
    return model
