"""Choose uniform per-kind sizes that meet a parameter budget (one-shot structures)."""

from __future__ import annotations

from collections.abc import Callable, Mapping


def uniform_sizes(
    limits: Mapping[str, int],
    gated: list[str],
    budget: float,
    count: Callable[[dict[str, int]], float],
    head_dim: int,
) -> dict[str, int]:
    """Sizes for the gated kinds among hidden / heads or head_width / ffn / conv whose count is closest to ``budget``.

    Every layer gets the same sizes. When hidden and an attention kind are gated and the teacher's
    hidden equals heads x head_dim, hidden is tied to kept heads x head_dim (or heads x kept
    head width) so the student keeps a stock shape. Conv channels (speech) keep the same share as
    the attention or hidden kind they go with, or are searched alone when neither is gated. The
    FFN width, being linear in the count, is solved for exactly. Among candidates that meet the
    budget equally well (to 0.1%), the one that shrinks each kind most evenly wins, then the closest.
    """
    attention = [k for k in ("heads", "head_width") if k in gated]
    if len(attention) > 1:
        raise ValueError("heads and head_width cannot both be gated: they prune the same attention rows")
    if not any(k in gated for k in ("hidden", *attention, "ffn", "conv")):
        raise ValueError("a size fraction needs at least one of the hidden, heads, head_width, ffn or conv axes gated")
    # Hidden units that one unit of the attention kind stands for in a stock shape.
    kind = attention[0] if attention else None
    coupled = kind is not None and "hidden" in gated and limits["hidden"] == limits["heads"] * head_dim
    if coupled:
        hidden_per_unit = {"heads": head_dim, "head_width": limits["heads"]}
        candidates = [{kind: k, "hidden": k * hidden_per_unit[kind]} for k in range(1, limits[kind] + 1)]
    elif kind is not None:
        candidates = [{kind: k} for k in range(1, limits[kind] + 1)]
    elif "hidden" in gated:
        candidates = [{"hidden": h} for h in range(1, limits["hidden"] + 1)]
    elif "conv" in gated:
        candidates = [{"conv": c} for c in range(1, limits["conv"] + 1)]
    else:
        candidates = [{}]
    scored = []
    for sizes in candidates:
        if "conv" in gated and "conv" not in sizes:
            share = next(sizes[k] / limits[k] for k in sizes)
            sizes = {**sizes, "conv": max(1, round(share * limits["conv"]))}
        if "ffn" in gated:
            base, slope = count({**sizes, "ffn": 0}), count({**sizes, "ffn": 1}) - count({**sizes, "ffn": 0})
            sizes = {**sizes, "ffn": min(limits["ffn"], max(1, round((budget - base) / slope)))}
        miss = abs(count(sizes) - budget) / budget
        fractions = [sizes[k] / limits[k] for k in sizes]
        scored.append((round(miss, 3), max(fractions) - min(fractions), miss, sizes))
    return min(scored, key=lambda s: s[:3])[3]
