"""A single-node run keeps Ray on the loopback interface.

Ray's GCS, raylet, object manager and worker ports listen on every interface by default, and a local
``ray.init`` advertises the node's outward address. Ray takes the loopback address for its node (and then
binds its servers there) when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which it reads when ``ray`` is first
imported -- so this runs before verl (which imports Ray) is imported. A multi-node run (``trainer.nnodes >
1``, ``RAY_ADDRESS``, ``ray_kwargs.ray_init.address``, or a cluster started here with ``ray start``) joins it and keeps the cluster's addresses;
keep such a cluster on a private network (docs/operations.md). A value the user set is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def running_local_cluster(env: Mapping[str, str]) -> bool:
    """A cluster started with ``ray start`` on this machine, which a bare ``ray.init()`` joins."""
    return Path(env.get("RAY_TMPDIR") or "/tmp", "ray", "ray_current_cluster").exists()


def single_node(config: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    """A run that starts its own one-node Ray (no cluster to join)."""
    trainer = config.get("trainer") or {}
    ray_init = (config.get("ray_kwargs") or {}).get("ray_init") or {}
    nodes = int(trainer.get("nnodes") or 1)
    joins = env.get("RAY_ADDRESS") or ray_init.get("address") or running_local_cluster(env)
    return nodes == 1 and not joins


def bind_ray_to_loopback(config: Mapping[str, Any], env: MutableMapping[str, str]) -> bool:
    """Set the loopback switch for a single-node run (unless set already); whether Ray will stay local."""
    if not single_node(config, env):
        return False
    env.setdefault(LOOPBACK_ENV, "0")
    return env[LOOPBACK_ENV] == "0"
