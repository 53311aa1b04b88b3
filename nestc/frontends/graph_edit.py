"""ONNX graph-level helpers of the frontend passes: names in use, the opset, one node's own copy of a shared
initializer."""

from __future__ import annotations

import onnx

from nestc.naming import claim_name


def default_opset(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain == "":
            return entry.version
    return 0


def graph_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name in use: initializers, node outputs and graph inputs."""
    return ({t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
            | {i.name for i in graph.input})


def own_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, slot: int, value: onnx.TensorProto,
                    taken: set[str]) -> onnx.TensorProto:
    """Store ``value`` under a fresh name (``<input>_<node>``), feed it to input ``slot`` of ``node``
    and return the stored tensor; ``taken`` holds every name in use and gains the new one."""
    name = claim_name(f"{node.input[slot]}_{node.name or node.output[0]}", taken)
    tensor = onnx.TensorProto()
    tensor.CopyFrom(value)
    tensor.name = name
    graph.initializer.append(tensor)
    node.input[slot] = name
    return graph.initializer[-1]
