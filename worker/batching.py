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
