"""``Network``: an ONNX graph that runs, trains and changes shape in PyTorch.

The ONNX graph stays the source of truth for structure: ``Network`` keeps the original nodes (names,
order, attributes) and replaces only the initializers by torch tensors. Trainable weights are
``nn.Parameter``; batch-norm statistics and other float constants are buffers (they follow
``.to(device)`` and land in ``state_dict``); integer tensors (shapes, axes, indices) stay on the CPU
as plain tensors because they steer shapes, not arithmetic.

Connection sparsity lives in 0/1 masks multiplied into the weights on every forward pass. The
*effective* weight ``w * mask`` is a non-leaf tensor, so its gradient is dense, which is exactly the
growth signal NeST needs for dormant connections; :meth:`Network.forward` can keep those gradients
(``keep_effective_grads``) and any intermediate activation (``taps``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from nestc.errors import ModelError, UnsupportedOpError
from nestc.ir.registry import Node, OpHandler, handler_for
from nestc.naming import unique_name

CONVOLUTION_OPS = frozenset({"Conv", "ConvTranspose"})
"""Layer ops whose weights are filters over channels and space."""
WEIGHT_OPS = frozenset({*CONVOLUTION_OPS, "Gemm", "MatMul"})
"""Ops whose weight initializers define a layer (and make following bias-like constants trainable)."""

PIXEL_INPUT_TYPES: dict[int, torch.dtype] = {onnx.TensorProto.UINT8: torch.uint8}
"""Integer graph input types nestc feeds image data to: pixels of 0..255, as edge models that convert and
scale their inputs inside the graph (``Cast`` then ``Div(255)``) take them."""

_BIAS_LIKE_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
_BN_STAT_INPUTS = (3, 4)


def _decode_attr(attr: onnx.AttributeProto) -> object:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8") for v in value]
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return value


def node_from_proto(proto: onnx.NodeProto, index: int) -> Node:
    """Decode a ``NodeProto``; unnamed nodes get a stable ``<op>_<index>`` name for messages."""
    attrs = {a.name: _decode_attr(a) for a in proto.attribute}
    name = proto.name or f"{proto.op_type}_{index}"
    return Node(name, proto.op_type, list(proto.input), list(proto.output), attrs, proto.domain)


def declared_shape(shape: onnx.TensorShapeProto) -> str:
    """``[N, 3, H, W]``: a shape as a file declares it, open dimensions by their name (``?`` unnamed)."""
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else d.dim_param or "?" for d in shape.dim) + "]"


@contextmanager
def exact_float32() -> Iterator[None]:
    """Float32 convolutions and matrix products without TF32 inside the block.

    PyTorch lets cuDNN run float32 convolutions in TF32 on Ampere and newer GPUs by default; its 10-bit
    mantissa moves a network's outputs by about 1e-3, ten times what a comparison with onnxruntime allows.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class _TensorStore(nn.Module):
    """Holds buffers under sanitised keys (torch forbids dots in buffer names)."""


class Network(nn.Module):
    """A trainable, resizable PyTorch form of one ONNX model.

    Args:
        model: a checked model, as returned by :func:`nestc.frontends.load_model`.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        self.template = onnx.ModelProto()
        self.template.CopyFrom(model)
        del self.template.graph.initializer[:]
        graph = model.graph
        self.node_protos = list(self.template.graph.node)
        self.nodes = [node_from_proto(p, i) for i, p in enumerate(graph.node)]
        self._check_supported(self.nodes)
        self.handlers: list[OpHandler] = [handler_for(n.op_type) for n in self.nodes]  # type: ignore[misc]
        init_names = {t.name for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in init_names]
        self.pixel_inputs = {i.name: PIXEL_INPUT_TYPES[i.type.tensor_type.elem_type] for i in graph.input
                             if i.name in self.input_names and i.type.tensor_type.elem_type in PIXEL_INPUT_TYPES}
        self.output_names = [o.name for o in graph.output]
        self.initializer_order = [t.name for t in graph.initializer]
        self.initializer_dtypes = {t.name: t.data_type for t in graph.initializer}
        self.weights = nn.ParameterDict()
        self.floats = _TensorStore()
        self.mask_store = _TensorStore()
        self.ints: dict[str, torch.Tensor] = {}
        self._keys: dict[str, str] = {}
        self.masks: dict[str, str] = {}
        trainable, stats = self._classify(graph)
        for t in graph.initializer:
            array = numpy_helper.to_array(t)
            self._add_tensor(t.name, array, trainable=t.name in trainable, is_stat=t.name in stats)
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.outputs}
        self.keep_effective_grads = False
        self.effective: dict[str, torch.Tensor] = {}
        self.tapped: dict[str, torch.Tensor] = {}

    # ----------------------------------------------------------------------------------- building
    @staticmethod
    def _check_supported(nodes: Sequence[Node]) -> None:
        missing = [n for n in nodes if handler_for(n.op_type) is None
                   or n.domain not in handler_for(n.op_type).domains]  # type: ignore[union-attr]
        if missing:
            listed = ", ".join(f"'{n.name}' ({n.domain + '.' if n.domain else ''}{n.op_type})" for n in missing)
            raise UnsupportedOpError(f"unsupported operators in {len(missing)} node(s): {listed}")

    def _classify(self, graph: onnx.GraphProto) -> tuple[set[str], set[str]]:
        """Decide which float initializers are trainable weights and which are BN statistics."""
        floats = {t.name for t in graph.initializer if np.issubdtype(
            helper.tensor_dtype_to_np_dtype(t.data_type), np.floating)}
        scalars = {t.name for t in graph.initializer if not t.dims}
        trainable: set[str] = set()
        stats: set[str] = set()
        follows_weights: set[str] = set()  # tensors produced by a weight op or its bias/scale chain
        for node, handler in zip(self.nodes, (handler_for(n.op_type) for n in self.nodes)):
            assert handler is not None
            consts = [i for i in node.inputs if i in floats]
            if node.op_type == "BatchNormalization":
                stats.update(node.inputs[i] for i in _BN_STAT_INPUTS if i < len(node.inputs))
                if node.inputs[0] in follows_weights:  # its outputs are still per unit of that layer: a scale or
                    follows_weights.update(node.outputs)  # shift after it trains as it would right after the layer
            if node.op_type in _BIAS_LIKE_OPS:
                others = [i for i in node.inputs if i not in floats]
                # a bias or scale has a unit axis, even of width 1; a rank-0 constant is part of a formula
                # (GELU's x / sqrt(2) in a legacy export) and stays fixed
                per_unit = [c for c in consts if c not in scalars]
                if per_unit and others and all(o in follows_weights for o in others):
                    trainable.update(per_unit)
                    follows_weights.update(node.outputs)
                continue
            trainable.update(node.inputs[i] for i in handler.weight_inputs
                             if i < len(node.inputs) and node.inputs[i] in floats)
            if node.op_type in WEIGHT_OPS:
                follows_weights.update(node.outputs)
        return trainable - stats, stats

    def _add_tensor(self, name: str, array: np.ndarray, trainable: bool, is_stat: bool) -> None:
        if array.dtype.kind not in "biuf":  # strings, bfloat16 and float8 (ml_dtypes) have no torch tensor
            raise ModelError(f"initializer '{name}' has element type {array.dtype}, which nestc cannot train or "
                             "run in torch; numeric tensors only")
        key = f"t{len(self._keys)}"
        self._keys[name] = key
        tensor = torch.from_numpy(np.array(array, copy=True))
        if tensor.is_floating_point():  # a constant added to a network on a GPU (insert_node) joins it there
            tensor = tensor.to(self.device)
        if trainable:
            self.weights[key] = nn.Parameter(tensor)
        elif tensor.is_floating_point():
            self.floats.register_buffer(key, tensor)
        else:
            self.ints[name] = tensor

    @classmethod
    def with_masks(cls, model: onnx.ModelProto, masks: dict[str, torch.Tensor], device: torch.device) -> Network:
        """``model`` (as :func:`nestc.ir.emit.emit_model` wrote it) on ``device`` with its connection ``masks``
        restored: an emitted file keeps the masked-out weights as zeros, not which zeros are masks."""
        net = cls(model)
        net.to(device)
        for name, mask in masks.items():
            net.set_mask(name, mask.to(device))
        return net

    # ------------------------------------------------------------------------------ tensor access
    def has_tensor(self, name: str) -> bool:
        """True when ``name`` is an initializer of the model."""
        return name in self._keys

    def is_trainable(self, name: str) -> bool:
        """True when the initializer ``name`` is an ``nn.Parameter``."""
        return name in self._keys and self._keys[name] in self.weights

    def trainable_names(self) -> list[str]:
        """ONNX names of all trainable initializers, in file order."""
        return [n for n in self.initializer_order if self.is_trainable(n)]

    def tensor(self, name: str) -> torch.Tensor:
        """The stored value of initializer ``name`` (the raw weight, without its mask)."""
        key = self._keys[name]
        if key in self.weights:
            return self.weights[key]
        if name in self.ints:
            return self.ints[name]
        return getattr(self.floats, key)

    def set_tensor(self, name: str, value: torch.Tensor) -> None:
        """Replace initializer ``name`` by ``value`` (any shape), keeping its kind.

        Structural passes call this; a replaced Parameter is a new object, so optimizers must be
        rebuilt or remapped afterwards (:mod:`nestc.training` does this).
        """
        key = self._keys[name]
        if key in self.weights:
            self.weights[key] = nn.Parameter(value.detach().clone().to(self.weights[key].dtype))
        elif name in self.ints:
            self.ints[name] = value.detach().clone().cpu()
        else:
            self.floats.register_buffer(key, value.detach().clone())

    def readers(self, name: str) -> list[Node]:
        """The nodes that read ``name``, in graph order (a graph output reading it is not among them)."""
        return [node for node in self.nodes if name in node.inputs]

    def sole_reader(self, name: str) -> Node | None:
        """The one node that reads ``name``; None when several or none do, or when the graph returns it too
        (whoever reads a graph output is a reader no pass sees)."""
        readers = [] if name in self.output_names else self.readers(name)
        return readers[0] if len(readers) == 1 else None

    def private_input(self, node: Node, slot: int) -> str:
        """Name of a constant input of ``node`` that no other node reads, copying it when shared.

        Exporters deduplicate equal constants, so one ``[1, 8]`` or ``[6]`` tensor may be a Reshape
        target here and a Slice end or an axes list there. A pass that rewrites one node's shape
        constant must not change the others; it calls this first and writes to the returned name.
        """
        name = node.inputs[slot]
        uses = sum(inp == name for n in self.nodes for inp in n.inputs) + self.output_names.count(name)
        if uses <= 1:
            return name
        taken = set(self._keys) | {o for n in self.nodes for o in n.outputs} | set(self.input_names)
        fresh = unique_name(f"{name}_{node.name}", taken)
        value = self.tensor(name).detach().clone()
        self.initializer_order.append(fresh)
        self.initializer_dtypes[fresh] = self.initializer_dtypes[name]
        self._add_tensor(fresh, value.cpu().numpy(), trainable=False, is_stat=False)
        node.inputs[slot] = fresh
        return fresh

    def set_input_constant(self, node: Node, slot: int, value: torch.Tensor) -> None:
        """Give ``node`` a new value for its constant input ``slot`` without touching other readers:
        nothing happens when the value is unchanged, a shared constant is copied first."""
        current = self.tensor(node.inputs[slot])
        if current.shape == value.shape and bool(torch.equal(current.cpu(), value.to(current.dtype).cpu())):
            return
        self.set_tensor(self.private_input(node, slot), value.to(current.dtype))

    def mask(self, name: str) -> torch.Tensor | None:
        """The 0/1 connection mask of weight ``name``, or ``None`` when it is fully dense."""
        key = self.masks.get(name)
        return None if key is None else getattr(self.mask_store, key)

    def set_mask(self, name: str, mask: torch.Tensor | None) -> None:
        """Attach (or with ``None`` remove) a connection mask; masked-out weights are zeroed."""
        if mask is None:
            key = self.masks.pop(name, None)
            if key is not None:
                delattr(self.mask_store, key)
            return
        weight = self.tensor(name)
        if mask.shape != weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}")
        key = self.masks.setdefault(name, self._keys[name])
        self.mask_store.register_buffer(key, mask.to(device=weight.device, dtype=weight.dtype))
        with torch.no_grad():
            weight.mul_(self.mask(name))  # type: ignore[arg-type]

    def effective_weight(self, name: str) -> torch.Tensor:
        """The weight the graph computes with: ``weight * mask`` (or the weight when dense)."""
        weight = self.tensor(name)
        mask = self.mask(name)
        return weight if mask is None else weight * mask

    @property
    def device(self) -> torch.device:
        """Where the float tensors live."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def insert_node(self, index: int, proto: onnx.NodeProto, constants: dict[str, np.ndarray]) -> Node:
        """Insert ``proto`` before node ``index``; ``constants`` become new non-trainable initializers.

        Used by passes that add computation the emitted graph must reproduce exactly (the input
        masks of partial-area convolution). Callers rewire consumers with :meth:`replace_input`.
        """
        for name, array in constants.items():
            self._add_tensor(name, array, trainable=False, is_stat=False)
            self.initializer_order.append(name)
            self.initializer_dtypes[name] = helper.np_dtype_to_tensor_dtype(array.dtype)
        node = node_from_proto(proto, index)
        self._check_supported([node])
        self.node_protos.insert(index, proto)
        self.nodes.insert(index, node)
        self.handlers.insert(index, handler_for(node.op_type))  # type: ignore[arg-type]
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.outputs}
        return node

    def replace_input(self, index: int, old: str, new: str) -> None:
        """Make node ``index`` read ``new`` wherever it read ``old``."""
        node, proto = self.nodes[index], self.node_protos[index]
        node.inputs = [new if name == old else name for name in node.inputs]
        for position, name in enumerate(proto.input):
            if name == old:
                proto.input[position] = new

    # -------------------------------------------------------------------------------- execution
    def _value(self, name: str) -> torch.Tensor:
        tensor = self.effective_weight(name)
        if self.keep_effective_grads and name in self.masks and tensor.requires_grad:
            tensor.retain_grad()
            self.effective[name] = tensor
        return tensor

    def forward(self, *inputs: torch.Tensor, taps: Iterable[str] = (), until: str | None = None
                ) -> tuple[torch.Tensor, ...]:
        """Run the graph; returns the graph outputs in order.

        Args:
            inputs: one tensor per graph input, in graph order.
            taps: names of intermediate tensors to keep in ``self.tapped`` (with ``retain_grad`` when
                they require grad), for passes that need activations or their gradients.
            until: stop as soon as this tensor is computed and return only it (a classifier's logits
                sit before its Softmax and ZipMap; nothing after them is needed for training).
        """
        env = self._feed(inputs)
        taps = set(taps)
        self.tapped = {name: env[name] for name in self.input_names if name in taps}
        return self._run(env, 0, len(self.nodes), taps, until) or self._outputs(env)

    def run_prefix(self, inputs: Sequence[torch.Tensor], stop: int) -> dict[str, torch.Tensor]:
        """Run the nodes before ``stop``; returns only the values that later nodes or graph outputs read.

        A caller that changes no tensor read before node ``stop`` and runs the graph many times (growth
        scores candidates this way) computes this once and goes on with :meth:`run_from`, getting what
        :meth:`forward` would, bit for bit, without recomputing the unchanged part.
        """
        env = self._feed(inputs)
        self._run(env, 0, stop, set(), None)
        needed = {name for node in self.nodes[stop:] for name in node.inputs} | set(self.output_names)
        return {name: value for name, value in env.items() if name in needed}

    def run_from(self, prefix: dict[str, torch.Tensor], start: int, until: str | None = None
                 ) -> tuple[torch.Tensor, ...]:
        """:meth:`forward` from node ``start`` on, given :meth:`run_prefix`'s values for ``start``."""
        env = dict(prefix)
        return self._run(env, start, len(self.nodes), set(), until) or self._outputs(env)

    def _feed(self, inputs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"model takes {len(self.input_names)} input(s), got {len(inputs)}")
        return {name: self._as_declared(name, value) for name, value in zip(self.input_names, inputs)}

    def _as_declared(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` in the type of a pixel input: nestc's data are float32 throughout (training, batching,
        placement), holding whole pixel values for such an input, and the graph gets them as it declares them."""
        dtype = self.pixel_inputs.get(name)
        return value.to(dtype) if dtype is not None and value.is_floating_point() else value

    def _run(self, env: dict[str, torch.Tensor], start: int, stop: int, taps: set[str],
             until: str | None) -> tuple[torch.Tensor] | None:
        """Run nodes ``start`` to ``stop`` into ``env``; ``(until,)`` as soon as a node computes it, else None."""
        for node, handler in zip(self.nodes[start:stop], self.handlers[start:stop]):
            args = [self._fetch(name, env) for name in node.inputs]
            try:
                outs = handler.forward(node, args, self.training)
            except (RuntimeError, ValueError, IndexError, TypeError, KeyError, ZeroDivisionError) as exc:
                raise ModelError(f"while executing {node.describe()}: {exc}") from exc
            for out_name, value in zip(node.outputs, outs):
                if out_name:
                    env[out_name] = value
                    if out_name in taps:
                        if value.requires_grad:
                            value.retain_grad()
                        self.tapped[out_name] = value
            if until is not None and until in node.outputs:
                return (env[until],)
        return None

    def _outputs(self, env: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(env[name] if name in env else self._value(name) for name in self.output_names)

    def _fetch(self, name: str, env: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not name:
            return None
        if name in env:
            return env[name]
        if name in self._keys:
            return self._value(name)
        raise ModelError(f"tensor '{name}' is used before any node produces it")

    def run_numpy(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Evaluate in inference mode on numpy inputs; used to compare with onnxruntime.

        Computed in float32 proper (:func:`exact_float32`), as the runtime it is compared with computes.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad(), exact_float32():
                dev = self.device
                outs = self(*(torch.from_numpy(np.asarray(a)).to(dev) for a in arrays))
            return [o.detach().cpu().numpy() for o in outs]
        finally:
            self.train(was_training)

    def activations(self, inputs: Sequence[torch.Tensor], names: Iterable[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` for ``inputs``, computed in inference mode without gradients.

        Inference mode is the emitted file's semantics (a BatchNormalization exported with
        ``training_mode=1`` still uses batch statistics, as onnxruntime does), so values measured
        here are the ones a runtime will see.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(*inputs, taps=names)
        finally:
            self.train(was_training)
        found, self.tapped = self.tapped, {}
        return found

    def _open_inputs(self, inputs: Sequence[torch.Tensor]) -> str:
        """"input 'x' is declared [N, C, H, W], so nestc ran it as [1, 32, 32, 32]" for every input whose
        dimensions after the batch are not all fixed in the file ("" when there is none)."""
        declared = {value.name: value.type.tensor_type.shape for value in self.template.graph.input}
        found = []
        for name, tensor in zip(self.input_names, inputs):
            shape = declared[name]
            if any(not d.HasField("dim_value") for d in list(shape.dim)[1:]):
                found.append(f"input '{name}' is declared {declared_shape(shape)}, so nestc ran it as "
                             f"{list(tensor.shape)}")
        return "; ".join(found)

    def tensor_shapes(self, *inputs: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Shapes of every tensor in the graph for the given inputs (one inference pass).

        Where the file leaves an input's size open, the caller chose it (to learn the shapes), not the
        user: a failure then says so, or the user would wonder where ``input[8, 8, 8, 8]`` came from.
        """
        names = [o for n in self.nodes for o in n.outputs if o]
        try:
            activations = self.activations(inputs, names)
        except ModelError as exc:
            open_inputs = self._open_inputs(inputs)
            if not open_inputs:
                raise
            raise ModelError(f"{open_inputs}, and failed {exc}; export the model with fixed input dimensions"
                             ) from exc
        shapes = {name: tuple(t.shape) for name, t in activations.items()}
        shapes.update({name: tuple(self.tensor(name).shape) for name in self._keys})
        shapes.update({name: tuple(t.shape) for name, t in zip(self.input_names, inputs)})
        return shapes
