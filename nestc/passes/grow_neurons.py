"""``grow_neurons``: new hidden neurons in fully connected layers from the bridging gradient (NeST).

For a hidden space between layer l (input activations H, ``C_in`` wide) and the layers that read it
(pre-activation gradients G of layer l+1, ``C_out`` wide), B = H^T G / N is the gradient a direct
connection i -> j would have. Fully connected layers compute along their last axis, so the rows of H
and G are positions: samples, or every token of every sample where the layers act on sequences
([N, L, C]). Each new neuron bridges the pairs with the largest |B_ij| (the top
``ceil(beta * C_in * C_out)``): fan-in psi_i = eps * sgn(-B_ij) * sqrt|B_ij| and fan-out
omega_j = eps * sqrt|B_ij|, so psi_i * omega_j = -B_ij is one descent step on the virtual connection
(eps = +-1 at random, shared). The paper's sign rule gives psi_i * omega_j = B_ij; the sign is
reversed here so that a neuron starts one descent step along its bridged connections, not one ascent
step. An input i (output j) in several of the pairs takes its value from its pair with the largest
|B_ij|, so the strongest bridge is exactly that step (the paper leaves the choice open). Both are
rescaled to ``alpha`` times the mean non-zero magnitude the layer they join had before this step's
growth (the paper's birth strength; alpha > 0.3 lets neurons survive pruning). Pairs used by one
neuron are not reused by the next in the same step: B is not recomputed between them, and neurons on
the same pairs would only add up to one neuron of larger weights.

Guarantees: the space grows by ``count`` units in every member (weights, biases, BN parameters,
masks); existing units are unchanged; new units have exactly the bridged connections active. A space
whose reader sees positions that neither equal the producer's nor reduce them is left as it is, and so is
a space read by several layers (a neuron there would need a bridge to each reader, measured jointly).
"""

from __future__ import annotations

import math

import torch

from nestc.channels.analysis import ChannelAnalysis, analyse_channels
from nestc.channels.layout import Member
from nestc.channels.resize import SpaceChange, apply_resize
from nestc.ir.network import Network
from nestc.passes.base import PassResult, Probe, effective_gradients
from nestc.passes.unit_spaces import UnitSpace, fc_spaces, write_units


def grow_neurons(probe: Probe, count: int, beta: float = 0.01, alpha: float = 0.5, seed: int = 0) -> PassResult:
    """Add ``count`` neurons to every fully connected hidden space of ``probe.view.net`` that feeds the logits."""
    net = probe.view.net
    analysis = analyse_channels(net, probe.x[:2])
    reaching = probe.loss_tensors()
    spaces = [s for s in fc_spaces(net, analysis)
              if len(s.readers) == 1 and s.readers[0][0].node.outputs[0] in reaching]
    if not spaces or count <= 0:
        return PassResult("grow_neurons", False)
    taps = [t for s in spaces for t in (s.producers[0][0].node.inputs[0], s.readers[0][0].node.outputs[0])]
    _, tapped = effective_gradients(probe, taps)
    found = {s.space: _bridging_gradient(tapped[s.producers[0][0].node.inputs[0]],
                                         tapped[s.readers[0][0].node.outputs[0]]) for s in spaces}
    bridges = {space: bridge for space, bridge in found.items() if bridge is not None}
    spaces = [s for s in spaces if s.space in bridges]
    if not spaces:
        return PassResult("grow_neurons", False)
    widths = {s.space: analysis.table.spaces[s.space].width for s in spaces}
    # the scales come first: a space's new neurons add columns to the next space's producer
    scales = {s.space: (_mean_magnitude(net, s.producers[0][0].weight), _mean_magnitude(net, s.readers[0][0].weight))
              for s in spaces}
    apply_resize(net, analysis, {s.space: SpaceChange(tuple(range(widths[s.space])), count) for s in spaces})
    generator = torch.Generator().manual_seed(seed)
    analysis = analyse_channels(net, probe.x[:2])
    by_key = {s.key: s for s in fc_spaces(net, analysis)}
    for old in spaces:
        space = by_key[old.key]
        _init_neurons(net, analysis, space, bridges[old.space], scales[old.space], widths[old.space], count, beta,
                      alpha, generator)
    return PassResult("grow_neurons", True, {"spaces": len(spaces), "per_space": count})


def _bridging_gradient(h_batches: list, g_batches: list) -> torch.Tensor | None:
    """B = H^T G over the probe batches (``C_in x C_out``), or ``None`` when H's and G's positions do not pair up.

    H and G are read position by position: one row per sample, or per token where the layers act on
    sequences. Flattening each sample into one row instead would pair the inputs of every token with the
    gradients of every other, a ``L*C_in x L*C_out`` matrix of which only a corner was then used.
    """
    total = None
    for (h, _), (_, g) in zip(h_batches, g_batches, strict=True):
        if g is None:
            continue
        rows = _rows_like(h, g)
        if rows is None:
            return None
        part = rows.float().T @ g.reshape(-1, g.shape[-1]).float()
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no gradient reached the layer after the grown space")
    # the probe loss is already a mean over samples, so the per-batch sums form the mean gradient
    return total


def _rows_like(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor | None:
    """H as one row per position of G: ``[positions, C_in]``.

    Where an op between the layers reduces positions (the mean over tokens before a classifier head), G
    has fewer of them: H is averaged over the positions each row of G sums up, which is the connection
    i -> j taken through that mean. Positions that do not nest this way (G's, without axes of size one, not
    a leading part of H's) give ``None``.
    """
    h_positions = [n for n in h.shape[:-1] if n != 1]
    g_positions = [n for n in g.shape[:-1] if n != 1]
    if h_positions[:len(g_positions)] != g_positions:
        return None
    return h.reshape(math.prod(g_positions), -1, h.shape[-1]).mean(1)


def _mean_magnitude(net: Network, weight: str) -> float:
    """Mean |w| over the non-zero effective weights of ``weight`` (0.1 for a weight without any)."""
    w = net.effective_weight(weight).detach()
    return float(w[w != 0].abs().mean()) if bool((w != 0).any()) else 0.1


def _init_neurons(net: Network, analysis: ChannelAnalysis, space: UnitSpace, bridge: torch.Tensor,
                  scales: tuple[float, float], first: int, count: int, beta: float, alpha: float,
                  generator: torch.Generator) -> None:
    (producer, producer_member), (reader, reader_member) = space.producers[0], space.readers[0]
    keep = max(1, math.ceil(beta * bridge.numel()))  # of the widths B was measured at
    # neighbouring spaces may have grown in this same step: their new units have no bridge yet
    c_in = net.tensor(producer.weight).shape[producer.in_axis]
    c_out = net.tensor(reader.weight).shape[reader.out_axis]
    bridge = torch.nn.functional.pad(bridge, (0, c_out - bridge.shape[1], 0, c_in - bridge.shape[0]))
    remaining = bridge.abs().flatten().clone()
    for unit in range(first, first + count):
        chosen = torch.topk(remaining, min(keep, int((remaining > 0).sum()) or 1)).indices  # largest |B| first
        remaining[chosen] = 0
        values, chosen = bridge.flatten()[chosen].cpu(), chosen.cpu()
        eps = 1.0 if torch.rand(1, generator=generator).item() < 0.5 else -1.0
        row = _strongest(chosen // c_out, values, c_in)
        psi = eps * torch.sign(-row) * row.abs().sqrt()
        omega = eps * _strongest(chosen % c_out, values, c_out).abs().sqrt()
        psi *= alpha * scales[0] / max(float(psi[psi != 0].abs().mean()), 1e-12)
        omega *= alpha * scales[1] / max(float(omega[omega != 0].abs().mean()), 1e-12)
        write_units(net, analysis, producer_member, space.space, [unit], _along(psi, producer_member, net))
        write_units(net, analysis, reader_member, space.space, [unit], _along(omega, reader_member, net))


def _strongest(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """Per position of ``size``, the first of ``values`` whose ``index`` is it (0 where none): with ``values``
    ordered by decreasing magnitude, the strongest pair of every input or output the neuron connects."""
    first = torch.full((size,), len(index), dtype=torch.long)
    first.scatter_reduce_(0, index, torch.arange(len(index)), "amin")
    return torch.cat([values, values.new_zeros(1)])[first]


def _along(vector: torch.Tensor, member: Member, net: Network) -> torch.Tensor:
    """Shape a per-connection vector as one unit's slice of ``member`` (unit axis first)."""
    shape = list(net.tensor(member.tensor).movedim(member.axis, 0).shape[1:])
    return vector.reshape([1, *shape])
