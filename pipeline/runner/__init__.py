"""The stage runner, in three parts:

- ``decide``: pure decisions — what a delivered message gets (``admit``) and what a run's outcome means
  (``conclude``): ack, nak with a delay, term, dead letter, the record's new state;
- ``records``: the record keeper — claims (compare-and-set in the bus's claim store), heartbeats,
  stage records in the store;
- ``handler``: one delivery from decoding to the ack — the one place that acks, naks and terms, and
  calls stages;
- ``worker``: the pull loop (slots, drain, idle exit) and what a worker does at start-up (reclaiming a
  dead predecessor's tasks, removing its scratch folders).

Its contract tests (``tests/pipeline/runner``) run on the in-memory bus (``pipeline.bus.memory``) and on a
real nats-server.
"""

from pipeline.runner.handler import Handler, Work
from pipeline.runner.worker import Worker

__all__ = ["Handler", "Work", "Worker"]
