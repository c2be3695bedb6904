"""The one process-wide allocator setting the command-line tools make, before torch loads.

PyTorch's CPU allocator advises buffers of 2 MiB and more onto transparent huge pages when THP_MEM_ALLOC_ENABLE=1,
read once, at its first allocation (Linux; elsewhere nothing changes). Decoding streams every weight once per token,
and on 4 KiB pages weights written after the model was built decoded slower than the model's own: a 2-core EPYC VM,
Qwen3-0.6B's 28-layer shape, merged weight copies 1.026x and 1.083x the plain model's decoding step in two runs,
0.967x with huge pages (`scripts/decode_profile.py --shape qwen3-0.6b --layers 28 --paths merged,plain --rank 128`,
docs/perf.md). Nothing here imports torch.
"""
from __future__ import annotations

import os

HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> None:
    """Ask torch's CPU allocator for huge pages unless the environment already says (the user's choice stands); it
    takes effect only when called before torch loads."""
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def huge_pages() -> bool:
    """Whether this process asked torch's allocator for huge pages (what a benchmark's report records)."""
    return os.environ.get(HUGE_PAGES_ENV) == "1"
