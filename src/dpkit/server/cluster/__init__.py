"""Several ``dpkit serve`` nodes as one service, on Redis.

One node with no ``redis_url`` is the embedded default and touches none of this. With one, each
node keeps a record of itself in Redis (:mod:`~dpkit.server.cluster.membership`), so any node
can tell which others are alive, where they are and how full. Redis is the cluster's only shared
state; a node that loses it keeps serving what it has, alone, and rejoins when it returns.
"""
