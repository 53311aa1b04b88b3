"""The training objective: cross-entropy on labels, distillation from the original model, or a mix.

NeST retrains a network after every grow or prune step; the uncompressed model's logits are the
best teacher available and work even when the user has no labels, so distillation is first-class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nestc.errors import OptionError
from nestc.training.config import TrainConfig


@dataclass(frozen=True)
class Objective:
    """``(1 - w) * CE(student, labels) + w * T² * KL(softmax(teacher/T) || softmax(student/T))``.

    The ``T²`` factor keeps the distillation gradients at the same scale as the label loss whatever
    the temperature (Hinton et al., 2015), so ``w`` means the same thing for every ``T``.
    """

    distill_weight: float
    temperature: float
    label_smoothing: float

    @classmethod
    def for_data(cls, config: TrainConfig, has_labels: bool, has_teacher: bool) -> Objective:
        """The objective ``config`` asks for, after checking the data can supply its terms."""
        weight = config.distill_weight
        if not has_labels and not has_teacher:
            raise OptionError("unlabeled data needs distillation from the original model: "
                              "pass teacher_logits and set distill_weight=1")
        if not has_labels and weight < 1:
            raise OptionError(f"unlabeled data needs distill_weight=1 (teacher only), got {weight}")
        if weight > 0 and not has_teacher:
            raise OptionError(f"distill_weight={weight} needs teacher_logits from the original model")
        return cls(weight, config.distill_temperature, config.label_smoothing)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor | None,
                 teacher: torch.Tensor | None) -> torch.Tensor:
        """Mean loss of one batch, computed in float32 whatever precision produced ``logits``."""
        logits = logits.float()
        w = self.distill_weight
        loss = None
        if w < 1:
            assert labels is not None, "for_data refuses unlabeled data unless distill_weight is 1"
            ce = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            loss = ce if w == 0 else (1 - w) * ce
        if w > 0:
            assert teacher is not None, "for_data refuses distill_weight > 0 without teacher logits"
            t = self.temperature
            kl = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1),
                          reduction="batchmean", log_target=True)
            kl = kl * (w * t * t)
            loss = kl if loss is None else loss + kl
        assert loss is not None, "distill_weight is a number in [0, 1] (TrainConfig checks it)"
        return loss
