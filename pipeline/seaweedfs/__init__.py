"""SeaweedFS server-side events: the filer's metadata log, turned into the bus's MinIO-format records.

The filer keeps a persistent, ordered log of every metadata change and serves it over gRPC
(``SubscribeMetadata``) from any timestamp. ``mouthpiece bridge`` follows that log from the offset it
stored last (in a NATS key-value bucket, only after the record is on the bus), so neither a restart of the
filer nor one of the bridge loses an event; a replay after a crash is deduplicated by the message id.

- ``filer_pb``: the few protobuf messages of SeaweedFS's ``filer.proto`` the bridge reads.
- ``records``: pure conversion of one metadata event into the created object it means, if any.
- ``bridge``: the long-running service (subscription, publishing, offsets).
"""
