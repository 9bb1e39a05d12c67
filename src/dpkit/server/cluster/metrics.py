"""``/metrics`` lines for the cluster: whether Redis answers, and the cluster's nodes and load."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpkit.server.cluster.membership import UP

if TYPE_CHECKING:
    from dpkit.server.state import ServerState


async def render_cluster_metrics(state: ServerState) -> str:
    """Nothing for a node alone; else Redis's state and the cluster's gauges, as this node
    sees them."""
    membership = state.membership
    if membership is None:
        return ""
    nodes = await membership.nodes()
    gauges = (
        (
            "dpkit_cluster_redis_up",
            "Whether this node reaches the cluster's Redis.",
            int(membership.status == UP),
        ),
        ("dpkit_cluster_nodes", "Live nodes of the cluster.", len(nodes)),
        (
            "dpkit_cluster_capacity",
            "Digital Persons of the cluster.",
            sum(node.capacity for node in nodes),
        ),
        (
            "dpkit_cluster_load",
            "Digital Persons in use in the cluster.",
            sum(node.load for node in nodes),
        ),
        (
            "dpkit_cluster_queue",
            "Clients waiting on the cluster's nodes.",
            sum(node.queue for node in nodes),
        ),
    )
    lines = []
    for name, help_text, value in gauges:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
    lines += [
        "# HELP dpkit_cluster_heartbeat_failures_total Heartbeats that could not reach Redis.",
        "# TYPE dpkit_cluster_heartbeat_failures_total counter",
        f"dpkit_cluster_heartbeat_failures_total {membership.failures}",
    ]
    queue = state.cluster_queue
    if queue is not None:
        lines += [
            "# HELP dpkit_cluster_queue_served_total Digital Persons of this node that the "
            "cluster's queue gave to a waiter of this node (here) or of another (remote).",
            "# TYPE dpkit_cluster_queue_served_total counter",
            *(
                f'dpkit_cluster_queue_served_total{{waiter="{where}"}} {count}'
                for where, count in sorted(queue.handed_out.items())
            ),
        ]
    return "\n".join(lines) + "\n"
