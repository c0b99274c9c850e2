"""The machine's memory bandwidth, for the decode ceiling (bench/ceiling.py): a vendor figure from the table
below when the machine is known, else a short probe where the model runs; `--bandwidth-gbs` overrides both.
The probe runs either way and is reported beside the figure used.

The probe, on the CPU: a STREAM-style triad a = b + s·c over float32 arrays far larger than the caches, with
torch (its elementwise kernels use as many threads as the engine: torch.set_num_threads), or numpy's
single-threaded a = b + c without torch; bytes = 3 × array size per pass (two reads, one write), the best of
a few passes. On a CUDA GPU: torch device-to-device copies (a read and a write per byte), timed with CUDA
events. A probe measures what a program gets, usually below the vendor's peak.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

GB = 1e9
# Vendor peak memory bandwidth, GB/s (decimal), by a name nvidia-smi or the CPU model reports; the longest
# matching name wins, case-insensitive.
KNOWN: dict[str, float] = {
    "GB10": 273,  # NVIDIA DGX Spark datasheet: 128 GB LPDDR5x, 273 GB/s
    "DGX Spark": 273,  # the same GB10
    "Jetson AGX Thor": 273,  # NVIDIA Jetson Thor datasheet: 128 GB LPDDR5X, 273 GB/s
    "Jetson AGX Orin": 204.8,  # NVIDIA Jetson AGX Orin 64GB datasheet
    "H200": 4800,  # NVIDIA H200 Tensor Core GPU datasheet: 141 GB HBM3e, 4.8 TB/s
    "H100 80GB HBM3": 3350,  # NVIDIA H100 datasheet, SXM: 3.35 TB/s
    "H100 PCIe": 2000,  # NVIDIA H100 datasheet, PCIe: 2 TB/s
    "H100 NVL": 3900,  # NVIDIA H100 datasheet, NVL: 3.9 TB/s
    "GH200": 4000,  # NVIDIA GH200 datasheet, 96 GB HBM3: 4 TB/s
    "B200": 8000,  # NVIDIA DGX B200 datasheet: 8 TB/s per GPU
    "A100-SXM4-80GB": 2039,  # NVIDIA A100 datasheet: 2,039 GB/s
    "A100 80GB PCIe": 1935,  # NVIDIA A100 datasheet: 1,935 GB/s
    "A100-SXM4-40GB": 1555,  # NVIDIA A100 datasheet: 1,555 GB/s
    "L40S": 864,  # NVIDIA L40S datasheet
    "L4": 300,  # NVIDIA L4 datasheet
    "RTX 4090": 1008,  # NVIDIA GeForce RTX 4090 specifications
    "RTX 5090": 1792,  # NVIDIA GeForce RTX 5090 specifications
    "Apple M1": 68.25,  # Apple M1 press release (LPDDR4X-4266, 128-bit)
    "Apple M1 Pro": 200, "Apple M1 Max": 400, "Apple M1 Ultra": 800,  # Apple press releases, Oct 2021 / Mar 2022
    "Apple M2": 100, "Apple M2 Pro": 200, "Apple M2 Max": 400, "Apple M2 Ultra": 800,  # Apple, 2022-2023
    # Apple, 2023-2025 (M3 Max: the 16-core CPU's; the 14-core one has 300)
    "Apple M3": 100, "Apple M3 Pro": 150, "Apple M3 Max": 400, "Apple M3 Ultra": 819,
    "Apple M4": 120, "Apple M4 Pro": 273, "Apple M4 Max": 546,  # Apple, Oct 2024 (M4 Max: 16-core CPU)
    "Ryzen AI Max+ 395": 256,  # AMD Ryzen AI Max+ 395 specifications: LPDDR5X-8000, 256-bit
}


@dataclass
class Bandwidth:
    gbs: float  # the figure the ceilings use
    source: str  # where it came from: the flag, the table (with the name matched), or the probe
    measured_gbs: float | None = None
    probe: str | None = None  # how the probe measured
    table_name: str | None = None
    table_gbs: float | None = None

    @property
    def bytes_per_s(self) -> float:
        return self.gbs * GB

    def summary(self) -> dict:
        return asdict(self)


def known(names: list[str]) -> tuple[str, float] | None:
    """The table's figure for the first of `names` (GPU names, then the CPU model) that one of its names is in."""
    for text in names:
        for name in sorted(KNOWN, key=len, reverse=True):
            if re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text or "", re.IGNORECASE):
                return name, KNOWN[name]
    return None


def cache_bytes() -> int:
    """The largest CPU cache the kernel reports (0 when unknown)."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        match = re.match(r"(\d+)([KMG]?)", path.read_text().strip())
        if match:
            sizes.append(int(match[1]) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match[2]])
    return max(sizes, default=0)


def array_bytes(cache: int, available: int) -> int:
    """Each of the triad's three arrays: 4 × the largest cache and at least 256 MiB, but the three together
    under an eighth of the available memory (the box may be busy)."""
    return int(max(256 * 2**20, min(4 * cache, available // 24)))


def available_memory() -> int:
    try:
        import psutil
        return psutil.virtual_memory().available
    except ImportError:
        return 8 * 2**30


def probe_cpu(threads: int, passes: int = 5, size: int | None = None) -> tuple[float, str]:
    """GB/s of the best triad pass, and how it was measured."""
    size = size or array_bytes(cache_bytes(), available_memory())
    n = size // 4
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
            best = _best(lambda: torch.add(b, c, alpha=3.0, out=a), passes)
        finally:
            torch.set_num_threads(before)
        how = f"torch triad, {threads} thread{'s' * (threads != 1)}"
    else:
        import numpy as np
        a, b, c = np.empty(n, np.float32), np.random.rand(n).astype(np.float32), np.random.rand(n).astype(np.float32)
        best = _best(lambda: np.add(b, c, out=a), passes)  # STREAM's "add": the same traffic as the triad
        how = "numpy add a = b + c, 1 thread (no torch)"
    return 3 * n * 4 / best / GB, f"{how}, 3 × {size / 2**20:.0f} MiB float32 arrays, best of {passes}"


def probe_cuda(passes: int = 10, size: int = 2**30) -> tuple[float, str]:
    import torch
    free, _ = torch.cuda.mem_get_info()
    size = min(size, free // 4)
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(passes):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    name = torch.cuda.get_device_name()
    return 2 * size / min(times) / GB, f"torch device copy on {name}, {size / 2**20:.0f} MiB, best of {passes}"


def _best(step, passes: int) -> float:
    step()  # touch the pages first
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(device: str, threads: int) -> tuple[float, str]:
    return probe_cuda() if device == "cuda" else probe_cpu(threads)


def choose(flag_gbs: float | None, names: list[str], device: str, threads: int, run_probe: bool = True,
           probe=measure) -> Bandwidth:
    """The figure to use: --bandwidth-gbs, else the table's for a known machine, else the probe's."""
    measured, how = probe(device, threads) if run_probe else (None, None)
    match = known(names)
    table_name, table_gbs = match if match else (None, None)
    if flag_gbs:
        used, source = flag_gbs, "--bandwidth-gbs"
    elif match:
        used, source = table_gbs, f"vendor figure for {table_name} (bench/bandwidth.py's table)"
    elif measured:
        used, source = measured, f"measured here: {how}"
    else:
        raise ValueError("no bandwidth figure: the machine is not in the table and the probe did not run; "
                         "pass --bandwidth-gbs")
    return Bandwidth(round(used, 2), source, measured and round(measured, 2), how, table_name, table_gbs)


def default_threads() -> int:
    """The threads llama.cpp computes with by default: one per physical core."""
    try:
        import psutil
        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1
