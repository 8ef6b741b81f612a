"""A Flower Grid in one process: the same ServerApp and ClientApp, no Ray.

Flower's simulation engine runs each ClientApp in a Ray actor; on a small
machine starting Ray costs more than a whole run of a small adapter. This
Grid implements Flower's `Grid` interface by calling the ClientApp of each
destination node directly, one after another, each node with its own
persistent `Context` (node_config "partition-id" / "num-partitions", as the
simulation engine sets them). Messages are copied in both directions, as a
transport would. A ClientApp that raises gives an error reply, as in Flower;
one that takes longer than the round's timeout has its reply dropped, as a
server waiting in parallel would never see it.

It is what the tests and quick benchmarks use; `tflm-train fleet simulate
--engine flower` (the default) runs Flower's simulation engine.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
import uuid

log = logging.getLogger("tflm_train.fleet")


def _grid_class():
    from flwr.app import Error, Message, RecordDict
    from flwr.app import Context
    from flwr.common.constant import ErrorCode
    from flwr.serverapp import Grid
    from flwr.supercore.run import Run

    class LocalGrid(Grid):
        def __init__(self, client_app, num_nodes: int, *, run_id: int = 1, node_config: dict | None = None):
            self.client_app = client_app
            self._run = Run.create_empty(run_id)
            self.node_ids = [1000 + i for i in range(num_nodes)]
            extra = node_config or {}
            self.contexts = {
                node: Context(run_id=run_id, node_id=node,
                              node_config={"partition-id": i, "num-partitions": num_nodes, **extra},
                              state=RecordDict(), run_config={})
                for i, node in enumerate(self.node_ids)
            }
            self._replies: dict[str, Message] = {}
            self.on_message = None  # test hook: called with every reply the server receives

        def set_run(self, run) -> None:
            self._run = run

        @property
        def run(self):
            return self._run

        def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
            return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

        def get_node_ids(self):
            return list(self.node_ids)

        def _deliver(self, message, timeout: float | None = None):
            node = message.metadata.dst_node_id
            incoming = Message(copy.deepcopy(message.content), dst_node_id=node,
                               message_type=message.metadata.message_type, group_id=message.metadata.group_id)
            incoming.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            started = time.monotonic()
            try:
                reply = self.client_app(incoming, self.contexts[node])
            except Exception as error:  # a failing device: an error reply, the round goes on
                log.info("node %s failed: %s", node, error)
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=str(error)),
                                reply_to=incoming)
            if timeout is not None and time.monotonic() - started > timeout:
                log.info("node %s replied after the %.1f s timeout: dropped", node, timeout)
                return None
            if reply.has_content():
                reply = Message(copy.deepcopy(reply.content), reply_to=incoming)
            if self.on_message is not None:
                self.on_message(reply)
            return reply

        def push_messages(self, messages, timeout: float | None = None):
            ids = []
            for message in messages:
                key = uuid.uuid4().hex
                reply = self._deliver(message, timeout)
                if reply is not None:
                    self._replies[key] = reply
                ids.append(key)
            return ids

        def pull_messages(self, message_ids):
            return [self._replies.pop(key) for key in message_ids if key in self._replies]

        def send_and_receive(self, messages, *, timeout=None):
            return self.pull_messages(self.push_messages(messages, timeout))

    return LocalGrid


def LocalGrid(client_app, num_nodes: int, **kwargs):  # noqa: N802 (a class, built lazily)
    """A Grid whose `num_nodes` nodes run `client_app` in this process."""
    return _grid_class()(client_app, num_nodes, **kwargs)


_RUN_IDS = itertools.count(1)


def run_local(server_app, client_app, num_nodes: int, *, node_config: dict | None = None, on_message=None):
    """Runs `server_app` against `num_nodes` in-process nodes; returns the grid."""
    from flwr.app import Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    grid = LocalGrid(client_app, num_nodes, run_id=next(_RUN_IDS), node_config=node_config)
    grid.on_message = on_message
    # Who "this process" is, which Flower's Message constructor reads (its
    # own ServerApp runners set the same).
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, grid.run.run_id, SUPERLINK_NODE_ID
    server_app(grid, Context(run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}))
    return grid


__all__ = ["LocalGrid", "run_local"]
