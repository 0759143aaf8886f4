"""Image-sharded replicas of the service (``docs/sharding.md``).

Every image's baseline lives on one shard: the owner of its routing key (the image repository) by rendezvous
hashing over the shard map (``baseliner.models.shards``, shared with the sensors).  The modules, in the order a
request meets them:

* :mod:`~baseliner.service.shards.membership` -- this shard's name, the numbered map it follows (and the one
  before it while images move), where the list comes from, what is kept on disk;
* :mod:`~baseliner.service.shards.holdings` -- where a routing key is now: here, fenced (moving away),
  or at another shard;
* :mod:`~baseliner.service.shards.peers` -- gRPC channels to the other shards, authenticated with the peer token;
* :mod:`~baseliner.service.shards.ingest` -- a sensor's batch that holds windows of images held elsewhere:
  those parts are forwarded (and applied there exactly once) before the rest is logged and applied here;
* :mod:`~baseliner.service.shards.handover` -- a routing key's state out (export, release) and in (import);
* :mod:`~baseliner.service.shards.cluster` -- the map's changes: the first shard proposes them, every shard
  pulls what it gains, a leaving shard drains; metrics; Falco alerts for another shard (the console shows its
  own shard only);
* :mod:`~baseliner.service.shards.servicer` -- the ``Shards`` gRPC service; :mod:`~baseliner.service.shards.admin`
  -- the Admin API answered by any shard.
"""
