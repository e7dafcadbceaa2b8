"""`multipl-moe demo`: the paper's experiment in miniature (settings, stages, evaluation, report)."""

from .run import STAMP, DemoOutputError, claim_output, fingerprint, run_demo
from .settings import FULL, QUICK, VARIANTS, DemoSize

__all__ = ["DemoOutputError", "DemoSize", "FULL", "QUICK", "STAMP", "VARIANTS", "claim_output", "fingerprint",
           "run_demo"]
