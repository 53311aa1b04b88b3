"""``grow_feature_maps``: new output channels of convolutions, best of several random candidates (NeST).

For each convolution space, a new map needs input kernels (a row of each producing Conv's weight, a
column of a ConvTranspose's; a residual stream has several producers, the stem and every block's last
convolution, and the map is new in all of them), the filters of the depthwise convolutions it passes through
(MobileNet's expand -> depthwise -> project; a zero filter would leave the map dead) and output
kernels (the columns that read it: the next Conv's input channel, or a block of a Linear layer's
columns after Flatten). ``candidates`` random sets are drawn at the layers' current connection
density and weight scale, each is scored by the loss on the probe batches, and the best is kept; the
paper reports about twice the loss drop of a single random draw.

Guarantees: every member of the space grows by ``count`` units (or a few more, up to the next multiple of
``round_to``: see ``NestConfig.round_to``); existing units are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nestc.channels.analysis import ChannelAnalysis, analyse_channels
from nestc.channels.layout import Member, unit_positions
from nestc.channels.resize import SpaceChange, aligned_width, apply_resize
from nestc.ir.network import Network
from nestc.passes.base import PassResult, Probe
from nestc.passes.unit_spaces import conv_spaces, write_units


def grow_feature_maps(probe: Probe, count: int, candidates: int = 4, seed: int = 0, round_to: int = 1) -> PassResult:
    """Add ``count`` feature maps to every convolution space of ``probe.view.net`` that feeds the logits; a
    space that ends at ``round_to`` maps or more gets as many more as make its width a multiple of ``round_to``."""
    net = probe.view.net
    analysis = analyse_channels(net, probe.x[:2])
    reaching = probe.loss_tensors()
    spaces = [s for s in conv_spaces(net, analysis)
              if any(layer.node.outputs[0] in reaching for layer, _ in s.producers)]
    if not spaces or count <= 0:
        return PassResult("grow_feature_maps", False)
    widths = {s.key: analysis.table.spaces[s.space].width for s in spaces}
    grown = {key: aligned_width(width + count, round_to) - width for key, width in widths.items()}
    apply_resize(net, analysis, {s.space: SpaceChange(tuple(range(widths[s.key])), grown[s.key]) for s in spaces})
    analysis = analyse_channels(net, probe.x[:2])
    generator = torch.Generator().manual_seed(seed)
    improvement, loss = 0.0, None
    for space in conv_spaces(net, analysis):
        if space.key not in widths:
            continue
        members = [*(m for _, m in space.producers), *space.filters, *(m for _, m in space.readers)]
        score = probe.loss_from(_first_reader(net, {m.tensor for m in members}))
        loss = score() if loss is None else loss
        first = widths[space.key]
        for unit in range(first, first + grown[space.key]):
            best_loss = _best_candidate(score, net, analysis, space.space, members, unit, candidates, generator)
            improvement += loss - best_loss
            loss = best_loss
    return PassResult("grow_feature_maps", True, {"spaces": len(widths), "grown": sum(grown.values()),
                                                  "loss_drop": round(improvement, 6)})


def _first_reader(net: Network, tensors: set[str]) -> int:
    """Index of the first node that reads any of ``tensors``: the nodes before it compute the same for every
    candidate."""
    return next(i for i, node in enumerate(net.nodes) if tensors.intersection(node.inputs))


def _best_candidate(score: Callable[[], float], net: Network, analysis: ChannelAnalysis, space: int,
                    members: list[Member], unit: int, candidates: int, generator: torch.Generator) -> float:
    """Write the lowest-loss of ``candidates`` random draws into ``unit``; returns that loss.

    The first draw is kept even when it does not beat the loss before (a grown unit needs weights), so
    the network ends exactly as it was when the returned loss was measured: it is the next unit's
    starting loss, and no forward pass measures it again.
    """
    best_loss, best = float("inf"), None
    for _ in range(candidates):
        draw = [_random_slice(net, analysis, m, space, unit, generator) for m in members]
        for member, values in zip(members, draw, strict=True):
            write_units(net, analysis, member, space, [unit], values)
        loss = score()
        if loss < best_loss or best is None:
            best_loss, best = loss, draw
    assert best is not None, "candidates >= 1 (NestConfig checks map_candidates)"
    for member, values in zip(members, best, strict=True):
        write_units(net, analysis, member, space, [unit], values)
    return best_loss


def _random_slice(net: Network, analysis: ChannelAnalysis, member: Member, space: int, unit: int,
                  generator: torch.Generator) -> torch.Tensor:
    """Random entries for one unit of ``member``, matching the tensor's non-zero scale and density.

    At least one entry is kept: a draw without any would leave the map unconnected there (a map of one
    input channel at density 0.8 drew none one time in five), and an unchanged loss can beat every
    connected candidate, so the best of the draws would be a map that compaction deletes at once.
    """
    weight = net.effective_weight(member.tensor).detach()
    nonzero = weight[weight != 0]
    scale = float(nonzero.abs().mean()) if nonzero.numel() else 0.1
    density = nonzero.numel() / max(weight.numel(), 1)
    positions = unit_positions(analysis.table, member.layout, space, {unit})
    shape = [len(positions), *weight.movedim(member.axis, 0).shape[1:]]
    values = torch.randn(shape, generator=generator) * scale * 1.25  # E|randn| = sqrt(2/pi) = 1 / 1.25
    keep = torch.rand(shape, generator=generator) < max(density, 0.05)
    keep.view(-1)[torch.randint(keep.numel(), (1,), generator=generator)] = True
    return values * keep
