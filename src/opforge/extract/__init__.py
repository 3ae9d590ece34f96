"""Extraction: pick ONNX nodes and cut each into a stand-alone, typed, shaped subgraph."""

from opforge.extract.model_io import load_model
from opforge.extract.select import select_nodes
from opforge.extract.subgraph import NodeSubgraph, extract_nodes

__all__ = ["NodeSubgraph", "extract_nodes", "load_model", "select_nodes"]
