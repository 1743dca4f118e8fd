"""Entry point of a Python node process: ``python -m flujo.node``.

The launcher starts one such process per replica, with the configuration in the
``FLUJO_NODE_CONFIG`` environment variable (JSON, see docs/PROTOCOL.md).
"""

from __future__ import annotations

import sys

from flujo.api import Node, instantiate
from flujo.config import NodeConfig
from flujo.loader import load_target
from flujo.runtime import NodeRuntime


def main() -> int:
    config = NodeConfig.from_environment()
    if not config.run:
        raise SystemExit(f"flujo node {config.label}: no `run` reference in the configuration")

    def make_node() -> Node:
        target = load_target(config.run, config.base_dir)  # type: ignore[arg-type]
        return instantiate(target, config.kind, config.args)

    return NodeRuntime(config, make_node).run()


if __name__ == "__main__":
    sys.exit(main())
