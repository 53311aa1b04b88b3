"""Seed architectures (``nestc seed``) and the graph builder behind them."""

from nestc.seeds.archs import ARCHITECTURES, build_seed

__all__ = ["ARCHITECTURES", "build_seed"]
