"""CUDA's device rules on a machine without a GPU, for tests of code that must run on one.

Tensors marked as the GPU's report ``device`` ``cuda:0`` while their data stay in host memory, and every
torch call is checked as CUDA would check it: a call that mixes them with host tensors of one or more
dimensions fails (a host scalar, 0-dim, may join them, and host index tensors may index them); a marked
tensor cannot become a numpy array. Marks follow the data: results of a call on marked tensors are marked,
``.to("cuda")`` (of a module too) and factories given ``device="cuda"`` mark what they return, ``.cpu()``
returns an unmarked copy, pinned host memory is host memory. ``meta`` tensors would not do: their kernels check
no devices, and they hold no values to decide on. torch.cuda's own functions are not simulated: tests that call
them replace them (``one_gpu_machine`` in ``test_devices.py``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

GPU = torch.device("cuda", 0)
_GETTERS = {name: torch._C.TensorBase.__dict__[name] for name in ("device", "is_cuda")}
_DATA = torch._C.TensorBase.__dict__["data"]
_TO_HOST_ARRAY = frozenset({"numpy", "__array__"})
_CROSS_DEVICE = frozenset({"copy_", "to", "cpu", "cuda", "__get__", "__set__", "_has_compatible_shallow_copy_type"})
_INDEXING = frozenset({"__getitem__", "__setitem__"})


def _is_gpu(device: Any) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


class SimulatedGpu(TorchFunctionMode):
    """A ``TorchFunctionMode`` under which marked tensors live on a simulated ``cuda:0``."""

    def __init__(self) -> None:
        super().__init__()
        self._marked: dict[int, weakref.ref] = {}

    # ------------------------------------------------------------------------------- marks
    def mark(self, tensor: torch.Tensor) -> torch.Tensor:
        """Put ``tensor`` on the simulated GPU (in place: the same object)."""
        key = id(tensor)
        self._marked[key] = weakref.ref(tensor, lambda _ref, key=key: self._marked.pop(key, None))
        return tensor

    def on_gpu(self, tensor: object) -> bool:
        """Whether ``tensor`` is a tensor on the simulated GPU."""
        ref = self._marked.get(id(tensor))
        return ref is not None and ref() is tensor

    # ------------------------------------------------------------------------------ checks
    def _host(self, tensor: torch.Tensor) -> bool:
        """A host tensor that CUDA would not accept next to a GPU tensor (host scalars are accepted)."""
        return not self.on_gpu(tensor) and tensor.dim() > 0

    def _check(self, name: str, args: tuple, kwargs: dict) -> None:
        if name in _INDEXING:  # host indices may index GPU tensors; the tensor and a stored value may not differ
            target, value = args[0], args[2] if name == "__setitem__" else None
            pairs = [(target, value)] if isinstance(value, torch.Tensor) else []
            pairs += [(target, index) for index in tree_leaves(args[1]) if isinstance(index, torch.Tensor)
                      and self.on_gpu(index)]
            for a, b in pairs:
                if self.on_gpu(a) != self.on_gpu(b) and b.dim() > 0:
                    raise RuntimeError(f"simulated CUDA: {name} mixes a cuda:0 tensor with a cpu tensor "
                                       f"{tuple(b.shape)}")
            return
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(self.on_gpu(t) for t in tensors) and any(self._host(t) for t in tensors):
            shapes = [(("cuda:0" if self.on_gpu(t) else "cpu"), tuple(t.shape)) for t in tensors]
            raise RuntimeError(f"simulated CUDA: expected all tensors on one device in {name}, got {shapes}")

    # ----------------------------------------------------------------------------- dispatch
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(func, "__self__", None)
        if name == "_parse_to":  # Module.to's parser: devices are only named here
            return func(*args, **kwargs)
        if name == "__get__" and any(owner is getter for getter in _GETTERS.values()):
            gpu = self.on_gpu(args[0])
            if owner is _GETTERS["device"]:
                return GPU if gpu else torch.device("cpu")
            return gpu
        if name in _TO_HOST_ARRAY and self.on_gpu(args[0]):
            raise TypeError("simulated CUDA: can't convert cuda:0 device type tensor to numpy; use Tensor.cpu()")
        if name == "pin_memory":  # page-locked host memory is host memory
            if self.on_gpu(args[0]):
                raise RuntimeError("simulated CUDA: cannot pin a cuda:0 tensor, only dense CPU tensors can be pinned")
            return args[0].clone()
        kwargs.pop("pin_memory", None)
        if name not in _CROSS_DEVICE:
            self._check(name, args, kwargs)
        target = self._target_device(name, args, kwargs)
        if name == "cuda":
            out = args[0].clone()
        else:
            if target is not None:  # the call runs on the host; where its result lives is the mark
                host = torch.device("cpu")
                kwargs = {k: host if k == "device" else v for k, v in kwargs.items()}
                args = tuple(host if isinstance(a, (str, torch.device)) and _is_gpu(a)
                             else a.dtype if name == "to" and i and isinstance(a, torch.Tensor) else a
                             for i, a in enumerate(args))
                if "other" in kwargs:
                    kwargs["dtype"] = kwargs.pop("other").dtype
            out = func(*args, **kwargs)
        if name == "__set__" and owner is _DATA:  # module.to("cuda") sets param.data
            if self.on_gpu(args[1]):
                self.mark(args[0])
            return out
        if name == "cpu" or target is False:
            return out.clone() if self.on_gpu(args[0]) and out is args[0] else out
        inputs_on_gpu = any(self.on_gpu(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor))
        if target or inputs_on_gpu:
            if name == "to" and out is args[0] and not self.on_gpu(out):
                out = out.clone()  # a host tensor moved to the GPU is a new tensor there
            for leaf in tree_leaves(out):
                if isinstance(leaf, torch.Tensor):
                    self.mark(leaf)
        return out

    def _target_device(self, name: str, args: tuple, kwargs: dict) -> bool | None:
        """True: the call puts its result on the GPU; False: on the host; None: where its inputs are."""
        if name == "cuda":
            return True
        device = kwargs.get("device")
        if name == "to":
            for arg in args[1:]:
                if isinstance(arg, (str, torch.device)):
                    device = arg
                elif isinstance(arg, torch.Tensor):
                    return self.on_gpu(arg)
            if isinstance(kwargs.get("other"), torch.Tensor):
                return self.on_gpu(kwargs["other"])
        if device is None:
            return None
        return _is_gpu(device)


@contextlib.contextmanager
def simulated_gpu() -> Iterator[SimulatedGpu]:
    """Enter :class:`SimulatedGpu`; ``nn.Parameter`` made of a GPU tensor is on the GPU too."""
    mode = SimulatedGpu()
    make = nn.Parameter.__new__

    def parameter(cls, data=None, requires_grad=True):
        made = make(cls, data, requires_grad)
        return mode.mark(made) if data is not None and mode.on_gpu(data) else made

    nn.Parameter.__new__ = parameter  # type: ignore[method-assign]
    try:
        with mode:
            yield mode
    finally:
        nn.Parameter.__new__ = make  # type: ignore[method-assign]
