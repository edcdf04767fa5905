"""Training: configs, schedules, checkpoints and the trainer loop."""

from seqlab.train.config import RunConfig, TrainConfig
from seqlab.train.trainer import Trainer, pick_device

__all__ = ["RunConfig", "TrainConfig", "Trainer", "pick_device"]
