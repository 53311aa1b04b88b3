"""Give normalisation parameters that an exporter merged by value their own tensors again.

torch's dynamo exporter (its ONNX optimiser) stores initializers with equal contents once. A freshly
initialised or untouched BatchNorm has weight == running_var == 1 and bias == running_mean == 0, so
one tensor ends up as the scale of one BatchNorm, the variance of the same one and the scale of the
next. In the framework these were separate tensors; trained as one they would be tied (every
BatchNorm sharing a scale), the in-place running-statistics update would write into a parameter that
autograd still needs, and compaction would have to remove the same channels from unrelated layers.
"""

from __future__ import annotations

import onnx

from nestc.frontends.graph_edit import graph_names, own_initializer

NORMALISATION_SLOTS = {
    "BatchNormalization": (1, 2, 3, 4),
    "InstanceNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
}
"""Inputs of normalisation nodes that hold one layer's own parameters or statistics."""


def untie_normalisation_parameters(model: onnx.ModelProto) -> int:
    """Copy every initializer that feeds a normalisation slot and is used more than once.

    The first use keeps the tensor; each further use (normalisation slot or not) gets its own copy
    when any of the tensor's uses is a normalisation slot. Weights shared between layers of other
    kinds (a siamese branch) stay shared. Returns the number of copies made.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    normalisation: set[str] = set()
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append((node, slot))
                if node.domain == "" and slot in NORMALISATION_SLOTS.get(node.op_type, ()):
                    normalisation.add(name)
    taken = graph_names(graph)
    copies = 0
    for name in sorted(normalisation):
        for node, slot in uses[name][1:]:
            own_initializer(graph, node, slot, inits[name], taken)
            copies += 1
    return copies
