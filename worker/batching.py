"""Grouping windows into forward batches under a token budget.

Windows of many (document, question) pairs run together. They are sorted by length
(longest first) so each batch pads only to its own longest window, and a batch holds
as many windows as fit in `batch_tokens` = windows x padded length.
"""

from __future__ import annotations


def plan_batches(lengths: list[int], batch_tokens: int, max_windows: int | None = None) -> list[list[int]]:
    """Indices into `lengths`, grouped into batches, longest windows first.

    Each batch satisfies len(batch) * max(lengths in batch) <= batch_tokens, except a
    single window longer than the budget, which runs alone. Ties keep input order, so
    the plan is deterministic.
    """
    if batch_tokens <= 0:
        raise ValueError(f"batch_tokens must be positive (got {batch_tokens})")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    current_max = 0
    for i in order:
        longest = max(current_max, lengths[i])
        full = max_windows is not None and len(current) >= max_windows
        if current and (full or (len(current) + 1) * longest > batch_tokens):
            batches.append(current)
            current, longest = [], lengths[i]
        current.append(i)
        current_max = longest
    if current:
        batches.append(current)
    return batches


# Padded shapes on a GPU (Settings.pad_buckets): a batch's width is rounded up to a multiple
# of this many tokens and its rows to a power of two, so a run sees a few shapes (at most
# 8 widths up to 512 tokens, ~10 row counts) instead of one per batch. CUDA graphs and
# torch.compile specialise on shapes; cuBLAS picks its kernels per shape too.
PAD_MULTIPLE = 64


def bucket_width(length: int, cap: int) -> int:
    """`length` rounded up to a multiple of PAD_MULTIPLE, but never past `cap` (the model's
    longest input) unless `length` itself is longer."""
    rounded = -(-length // PAD_MULTIPLE) * PAD_MULTIPLE
    return min(rounded, max(length, cap))


def bucket_rows(rows: int, width: int, batch_tokens: int, max_windows: int | None = None) -> int:
    """`rows` rounded up to a power of two, but never past what the budget holds at `width`
    (nor max_windows): full batches keep their size, a batch's last rows pad the rest."""
    full = batch_tokens // max(width, 1)
    if max_windows is not None:
        full = min(full, max_windows)
    return max(rows, min(1 << (rows - 1).bit_length(), full))
