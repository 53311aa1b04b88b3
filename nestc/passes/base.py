"""What every NeST pass shares: the result record, the layers it acts on, and gradient probes.

A *layer* is a channel-mixing node (Conv, ConvTranspose, Gemm, MatMul) with a trainable weight.
Connection passes act on its 0/1 mask; unit passes act on the channel spaces between layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nestc.ir.classifier import ClassifierView
from nestc.ir.network import WEIGHT_OPS, Network
from nestc.ir.registry import Node
from nestc.training import distributed
from nestc.training.state import training_mode


@dataclass
class PassResult:
    """What a pass changed: ``modified`` is false when the network is untouched."""

    name: str
    modified: bool
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Layer:
    """A channel-mixing node and its weight; ``out_axis`` indexes output units, ``in_axis`` inputs."""

    node: Node
    weight: str
    out_axis: int
    in_axis: int


def layers(net: Network) -> list[Layer]:
    """Every channel-mixing node whose weight is trainable, in graph order."""
    found = []
    for node in net.nodes:
        if node.op_type not in WEIGHT_OPS:
            continue
        if node.op_type == "MatMul":
            if net.is_trainable(node.inputs[1]) and net.tensor(node.inputs[1]).dim() == 2:
                found.append(Layer(node, node.inputs[1], 1, 0))
            continue
        weight = node.inputs[1]
        if not net.is_trainable(weight):
            continue
        if node.op_type == "Gemm":
            trans = bool(node.attr("transB", 0))
            found.append(Layer(node, weight, 0 if trans else 1, 1 if trans else 0))
        elif node.op_type == "ConvTranspose":
            found.append(Layer(node, weight, 1, 0))
        else:
            found.append(Layer(node, weight, 0, 1))
    return found


def ensure_masks(net: Network) -> None:
    """Give every layer weight a connection mask: its non-zero pattern (zeros are dormant connections).

    A sparse seed or a pruned model arrives with exact zeros; treating them as dormant lets growth
    revive them and keeps pruned ones pruned while retraining.
    """
    for layer in layers(net):
        if net.mask(layer.weight) is None:
            net.set_mask(layer.weight, (net.tensor(layer.weight).detach() != 0).to(net.tensor(layer.weight).dtype))


def active_connections(net: Network) -> int:
    """Number of active (mask 1) layer-weight entries."""
    total = 0
    for layer in layers(net):
        mask = net.mask(layer.weight)
        total += int(mask.sum()) if mask is not None else net.tensor(layer.weight).numel()
    return total


@dataclass
class Probe:
    """A few fixed batches on which passes measure losses and gradients.

    Attributes:
        view: the classifier view of the network.
        x: inputs on the network's device.
        y: labels, or ``None`` (then ``teacher`` logits give the loss).
        teacher: the reference model's logits for ``x``, or ``None``.
        batch_size: samples per forward pass.
    """

    view: ClassifierView
    x: torch.Tensor
    y: torch.Tensor | None
    teacher: torch.Tensor | None = None
    batch_size: int = 256

    def batches(self) -> list[slice]:
        """Slices of ``x`` covering it in order."""
        return [slice(i, min(i + self.batch_size, len(self.x))) for i in range(0, len(self.x), self.batch_size)]

    def loss(self, logits: torch.Tensor, part: slice) -> torch.Tensor:
        """Cross-entropy on labels, or KL to the teacher when unlabeled; ``logits`` of the logits tensor
        itself (``[N, classes, 1, 1]`` from a fully convolutional classifier) count as ``[N, classes]``."""
        logits = logits.flatten(1)
        if self.y is not None:
            return F.cross_entropy(logits.float(), self.y[part])
        target = F.softmax(self.teacher[part].float(), dim=1)  # type: ignore[index]
        return F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="batchmean")

    def mean_loss(self) -> float:
        """Loss over all probe batches, no gradients, eval mode."""
        return self._mean_loss(lambda k, part: self.view(self.x[part]))

    def loss_from(self, start: int) -> Callable[[], float]:
        """:meth:`mean_loss` for a caller that changes no tensor read before node ``start`` between calls.

        Feature-map growth scores every candidate by the probe loss, and a candidate changes only the
        layers from its producer on: the values before it are computed here once, each call runs the
        rest of the graph (the same losses, bit for bit, as :meth:`mean_loss`).
        """
        net = self.view.net
        with training_mode(net, False), torch.no_grad():
            prefixes = [net.run_prefix([self.x[part]], start) for part in self.batches()]
        return lambda: self._mean_loss(lambda k, part: net.run_from(prefixes[k], start, self.view.logits_name)[0])

    def loss_tensors(self) -> set[str]:
        """Every tensor the logits depend on.

        Growth is steered by the loss: a layer whose output does not reach it (an auxiliary head next to
        the classifier) gets no gradient to bridge and no loss change to choose candidates by, and a pass
        that ran the graph for it would stop at the logits before reaching it.
        """
        net = self.view.net
        found: set[str] = set()
        pending = [self.view.logits_name]
        while pending:
            name = pending.pop()
            if name and name not in found:
                found.add(name)
                if name in net.producer:
                    pending.extend(net.nodes[net.producer[name]].inputs)
        return found

    def _mean_loss(self, logits: Callable[[int, slice], torch.Tensor]) -> float:
        """Sample-weighted mean of the loss of ``logits(batch number, batch)`` over the probe batches."""
        total = 0.0
        with training_mode(self.view.net, False), torch.no_grad():
            for k, part in enumerate(self.batches()):
                total += float(self.loss(logits(k, part), part)) * (part.stop - part.start)
        return total / len(self.x)


def effective_gradients(probe: Probe, taps: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], dict[str, list]]:
    """Dense loss gradients w.r.t. every masked weight (dormant entries included), summed over batches.

    Also returns, for each name in ``taps``, the list of ``(activation, gradient)`` pairs per batch,
    which neuron growth needs for its bridging gradient.

    Under data parallelism every rank computes them on the same probe, and every rank gets rank 0's: growth
    ranks connections and neurons by these gradients, and GPU backward kernels that accumulate with atomics
    need not give every rank the same bits, which would grow different connections on different ranks.
    """
    net = probe.view.net
    was_training = net.training
    net.eval()
    net.keep_effective_grads = True
    grads: dict[str, torch.Tensor] = {}
    tapped: dict[str, list] = {name: [] for name in taps}
    try:
        for part in probe.batches():
            net.effective = {}
            logits = net(probe.x[part], taps=list(taps), until=probe.view.logits_name)[0]
            loss = probe.loss(logits, part) * (part.stop - part.start) / len(probe.x)
            loss.backward()
            for name, tensor in net.effective.items():
                if tensor.grad is not None:
                    grads[name] = grads.get(name, 0) + tensor.grad.detach()
            for name, pairs in tapped.items():  # once per name, however often ``taps`` repeats it
                value = net.tapped[name]
                pairs.append((value.detach(), value.grad.detach() if value.grad is not None else None))
    finally:
        net.keep_effective_grads = False
        net.effective = {}
        net.tapped = {}
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    tapped_grads = [g for pairs in tapped.values() for _, g in pairs if g is not None]
    distributed.broadcast_tensors([*grads.values(), *tapped_grads])
    return grads, tapped
