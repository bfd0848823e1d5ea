"""WID (weight-inherited distillation), registered as ``wid`` and as the design's generic name ``compactor``."""

from compress.methods.registry import register_method
from compress.schema import FLOAT, STR, Field, at_least, one_of, positive

SIDES = ("writer", "reader")


def _compactor_sides(v: dict) -> str | None:
    from compress.families import AXIS_KINDS

    for kind, sides in v.items():
        if kind not in AXIS_KINDS:
            return f"names unknown axis {kind!r}; axes are {', '.join(AXIS_KINDS)}"
        if not isinstance(sides, list) or any(side not in SIDES for side in sides):
            return f"entry {kind!r} must be a list of 'writer' and / or 'reader' (got {sides!r})"
    return None


SETTINGS = {
    # where compactors go (per axis kind: writer and / or reader side), one per axis side ("shared")
    # or one per module ("per-tensor", WID's layout), and the weight of the shrink penalty
    "prune.compactor_sides": Field(
        (dict,), {"hidden": ["writer", "reader"], "heads": ["writer", "reader"], "ffn": ["reader"]}, check=_compactor_sides
    ),
    "prune.compactor_layout": Field(STR, "shared", check=one_of(("shared", "per-tensor"))),
    "prune.shrink_penalty": Field(FLOAT, 0.01, check=at_least(0.0)),
    # Adam's first steps move every compactor entry by about this much: a coherent step of spectral norm
    # up to width x lr on an identity. 1e-3 scrambled a MiniLM classifier in one step; 1e-4 also distils
    # the sentence encoder better (README, WID)
    "train.compactor_lr": Field(FLOAT, 1.0e-4, check=positive),
}

register_method("wid", "compress.methods.wid.method:WIDMethod", SETTINGS)
register_method("compactor", "compress.methods.wid.method:WIDMethod", SETTINGS)
