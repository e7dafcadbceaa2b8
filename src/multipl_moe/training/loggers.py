"""Where training metrics go besides metrics.jsonl: TensorBoard and/or Weights & Biases.

`report_to` in the training config names them, as `report_to` does in Hugging Face's Trainer.
Both receive the same scalars under the same names (`train/loss`, `val_loss_by_lang/py`, ...),
through one `add_scalar(tag, value, step)`, the call the trainer already makes for TensorBoard.

W&B is an optional dependency (`pip install multipl-moe[wandb]`). Asked for without it, training
stops before anything is loaded, in one line. The W&B run id is kept in output_dir, so a
`--resume` continues the same W&B run; its project comes from $WANDB_PROJECT (else
"multipl-moe"), and WANDB_MODE=offline logs to disk only (`wandb sync` uploads later).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

WANDB_ID = "wandb-run-id"


def wanted(cfg) -> list[str]:
    names = list(dict.fromkeys(getattr(cfg, "report_to", None) or []))
    if not getattr(cfg, "tensorboard", True) and "tensorboard" in names:
        names.remove("tensorboard")
    return names


def check(cfg) -> None:
    """Every logger asked for can be imported (checked before the model is built)."""
    if "wandb" in wanted(cfg):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UserError("report_to includes wandb, but wandb is not installed: pip install "
                            "'multipl-moe[wandb]' (or drop wandb from report_to)") from None


class Loggers:
    """TensorBoard's SummaryWriter and/or a W&B run behind `add_scalar` and `close`."""

    def __init__(self, cfg, out: Path, run_record: dict | None = None):
        self.tb = None
        self.wandb_run = None
        names = wanted(cfg)
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(out) / "tensorboard"))
        if "wandb" in names:
            check(cfg)
            import os
            import secrets

            import wandb

            id_file = Path(out) / WANDB_ID
            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
            self.wandb_run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or "multipl-moe", name=Path(out).name,
                id=run_id, resume="allow", dir=str(out),
                config={**cfg.to_dict(), "multipl_moe_run": run_record or {}})
            id_file.write_text(run_id + "\n")

    def __bool__(self) -> bool:
        return self.tb is not None or self.wandb_run is not None

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log({tag: value}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def make(cfg, out: Path, run_record: dict | None = None) -> Loggers | None:
    loggers = Loggers(cfg, out, run_record)
    return loggers if loggers else None
