"""`multipl-moe demo`: the paper's experiment in miniature (settings, stages, evaluation, report)."""

from .run import (STAMP, DemoOptions, DemoOutputError, DemoStageError, check_options, claim_output, fingerprint,
                  locked_output, run_demo)
from .settings import CPU, GPU, QUICK, SIZES, VARIANTS, DemoSize

__all__ = ["CPU", "DemoOptions", "DemoOutputError", "DemoSize", "DemoStageError", "GPU", "QUICK", "SIZES", "STAMP",
           "VARIANTS", "check_options", "claim_output", "fingerprint", "locked_output", "run_demo"]
