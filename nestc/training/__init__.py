"""Training for every NeST step: fit, evaluate and predict, on one device or data-parallel.

``Trainer`` runs the loop; ``TrainConfig`` holds its options; :mod:`nestc.training.distributed`
has the helpers later code needs to keep decisions identical on all ranks.
"""

from nestc.training.config import TrainConfig
from nestc.training.distributed import DistInfo, all_reduce_mean, broadcast_object, init_from_env
from nestc.training.trainer import FitResult, Trainer

__all__ = ["DistInfo", "FitResult", "TrainConfig", "Trainer", "all_reduce_mean", "broadcast_object", "init_from_env"]
