"""Data sets for nestc: named benchmarks, user files, and fitting them to a model's input.

``load_dataset`` reads MNIST, Fashion-MNIST, KMNIST and CIFAR-10/100 from their official files
(where torchvision or Debian put them), a shipped Fashion-MNIST subset (``embedded``), ``.npz``
files and image folders; ``fit_to_input`` normalises and reshapes a :class:`Dataset` for a model.
"""

from nestc.data.dataset import Dataset
from nestc.data.fit import fit_to_input
from nestc.data.load import NAMES, load_dataset

__all__ = ["NAMES", "Dataset", "fit_to_input", "load_dataset"]
