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
    """Sizes for the gated kinds among hidden / heads / ffn whose count is closest to ``budget``.

    Every layer gets the same sizes. When both hidden and heads are gated and the teacher's
    hidden equals heads x head_dim, hidden is tied to heads x head_dim so the student keeps a
    stock shape. The FFN width, being linear in the count, is solved for exactly. Among
    candidates that meet the budget equally well, the one that shrinks each kind most evenly wins.
    """
    shrinkable = [k for k in ("hidden", "heads", "ffn") if k in gated]
    if not shrinkable:
        raise ValueError("a size fraction needs at least one of the hidden, heads or ffn axes gated")
    coupled = "hidden" in gated and "heads" in gated and limits["hidden"] == limits["heads"] * head_dim
    if coupled:
        candidates = [{"heads": k, "hidden": k * head_dim} for k in range(1, limits["heads"] + 1)]
    elif "heads" in gated:
        candidates = [{"heads": k} for k in range(1, limits["heads"] + 1)]
    elif "hidden" in gated:
        candidates = [{"hidden": h} for h in range(1, limits["hidden"] + 1)]
    else:
        candidates = [{}]
    scored = []
    for sizes in candidates:
        if "ffn" in gated:
            base, slope = count({**sizes, "ffn": 0}), count({**sizes, "ffn": 1}) - count({**sizes, "ffn": 0})
            sizes = {**sizes, "ffn": min(limits["ffn"], max(1, round((budget - base) / slope)))}
        miss = abs(count(sizes) - budget) / budget
        fractions = [sizes[k] / limits[k] for k in sizes]
        scored.append((round(miss, 3), max(fractions) - min(fractions), sizes))
    return min(scored, key=lambda s: (s[0], s[1]))[2]
