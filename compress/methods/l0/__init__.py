"""L0 (CoFi / DPHuBERT): HardConcrete gates under a Lagrangian, registered as ``l0``."""

from compress.methods.registry import register_method
from compress.schema import FLOAT, Field, positive

SETTINGS = {
    "train.gate_lr": Field(FLOAT, 0.1, check=positive),
    "train.lambda_lr": Field(FLOAT, 0.1, check=positive),
}

register_method("l0", "compress.methods.l0.method:L0Method", SETTINGS)
