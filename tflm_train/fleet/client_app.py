"""The Flower ClientApp: one device's round of local training.

A round on a client, as a device runs it:

  1. the global adapter arrives (Flower ArrayRecord "arrays": one float32
     array per trainable tensor, named as in the state layout);
  2. it is written into the device's own training state (AdapterLayout.
     with_adapter: the device's optimizer slots and counters stay), loaded
     into a `TrainableModel` (the TFLM interpreter with our kernels) and
     trained one sample per step over the local data, `local_epochs` times;
  3. the reply is the delta `adapter after - adapter received`, encoded by
     `delta_mod` (float32 or int8, optional top-k; tflm_train/fleet/delta.py).

The training step's reply (before `delta_mod`) holds the full adapter in
Flower's usual convention, so Flower's client mods that compare the reply
with the received arrays (fixedclipping_mod, adaptiveclipping_mod,
localdp_mod) work unchanged between the two: pass them as `mods`. The order
on the wire is: [secaggplus_mod] -> delta_mod -> your mods -> training.

The client's data comes from `load_partition(partition_id, num_partitions)`;
the ids are the node's config: Flower's simulation sets "partition-id" and
"num-partitions", a SuperNode gets them with
`--node-config "partition-id=0 num-partitions=2"`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tflm_train.fleet.delta import ENCODINGS, AdapterLayout, Delta

DELTA_RECORD = "delta"  # the reply's ArrayRecord: one uint8 array, the delta's bytes
STATE_RECORD = "tflm_train"  # the client's Context.state: its own training state (stays local)
# Legacy (Fit/FitRes) records, which the SecAgg+ workflow and mod speak.
_FITINS = "fitins.parameters"

LoadPartition = Callable[[int, int], tuple[np.ndarray, np.ndarray]]

# One interpreter per model per process (a Ray actor or a SuperNode's
# ClientApp process trains its clients one after another).
_MODELS: dict[str, tuple] = {}


class ClientDropout(RuntimeError):
    """A simulated device that fails in this round (`dropout` > 0)."""


def _runtime(model_bytes: bytes):
    key = hashlib.sha256(model_bytes).hexdigest()
    if key not in _MODELS:
        from tflm_train.trainer import TrainableModel

        _MODELS[key] = (TrainableModel(model_bytes), AdapterLayout.of_model(model_bytes))
    return _MODELS[key]


def _read_model(model: bytes | str | Path) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()


def _adapter_from_arrays(record, layout: AdapterLayout) -> dict[str, np.ndarray]:
    return {name: record[name].numpy().astype(np.float32).reshape(slot.shape)
            for name, slot in zip(layout.names, layout.slots)}


def _is_legacy(content) -> bool:
    return _FITINS in content.array_records


def _legacy_adapter(content, layout: AdapterLayout) -> dict[str, np.ndarray]:
    """The adapter in a legacy FitIns: the parameters in the layout's order."""
    from flwr.common import bytes_to_ndarray

    record = content.array_records[_FITINS]
    arrays = [bytes_to_ndarray(record[key].data) for key in record.keys()]
    return {slot.name: np.asarray(a, np.float32).reshape(slot.shape) for slot, a in zip(layout.slots, arrays)}


def round_learning_rate(learning_rate: float, decay: float, server_round: int) -> float:
    """The device's learning rate in a round: `learning_rate * decay**(round - 1)`.
    Late rounds take smaller local steps, so the global adapter settles instead
    of following whichever skewed clients were sampled last."""
    return learning_rate * decay ** max(server_round - 1, 0)


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """The seed of a client's data order in a round (reproducible anywhere)."""
    return random.Random(f"order:{seed}:{server_round}:{partition_id}").getrandbits(31)


def train_locally(model_bytes: bytes, own_state: bytes | None, adapter: dict[str, np.ndarray], x: np.ndarray,
                  y: np.ndarray, *, learning_rate: float, local_epochs: int, seed: int) -> tuple[bytes, float]:
    """One device's local round: `adapter` written into its state, trained
    on (x, y) one sample per step in a seeded order. Returns the new state
    (which stays on the device) and the mean training loss."""
    model, layout = _runtime(model_bytes)
    if own_state is None:
        model.reset()
        own_state = model.save_state()
    model.load_state(layout.with_adapter(own_state, adapter))
    order_rng = np.random.default_rng(seed)
    losses = []
    for _ in range(local_epochs):
        for i in order_rng.permutation(len(x)):
            losses.append(model.train_step(x[i], y[i], learning_rate))
    finite = [loss for loss in losses if np.isfinite(loss)]
    return model.save_state(), float(np.mean(finite)) if finite else float("nan")


def delta_mod(layout: AdapterLayout, encoding: str = "float32", top_k: float | None = None):
    """A Flower client mod: turns the training step's reply (the full adapter)
    into the delta against the adapter the round started from.

    Message API: the reply becomes ArrayRecord "delta" (one uint8 array: the
    delta's bytes, docs/federated.md) and MetricRecord "metrics" (plus
    "delta-bytes"). Legacy FitRes (the SecAgg+ workflow): the parameters
    become the dense delta (after `encoding`'s quantization) in the layout's
    order, and the metrics carry the base model and layout hashes, which the
    server checks without reading the (masked) update."""
    from flwr.app import Array, ArrayRecord, MessageType, MetricRecord, RecordDict

    def mod(msg, context, call_next):
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, context)
        legacy = _is_legacy(msg.content)
        start = _legacy_adapter(msg.content, layout) if legacy else \
            _adapter_from_arrays(next(iter(msg.content.array_records.values())), layout)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        if legacy:
            return _legacy_delta_reply(reply, start, layout, encoding, top_k, context)
        end_record = next(iter(reply.content.array_records.values()))
        metrics = MetricRecord(dict(next(iter(reply.content.metric_records.values()))))
        delta = Delta.between(layout, start, _adapter_from_arrays(end_record, layout), encoding=encoding,
                              top_k=top_k, num_examples=int(metrics.get("num-examples", 0)))
        blob = delta.to_bytes()
        metrics["delta-bytes"] = len(blob)
        reply.content = RecordDict({
            DELTA_RECORD: ArrayRecord({DELTA_RECORD: Array(np.frombuffer(blob, np.uint8).copy())}),
            "metrics": metrics,
        })
        return reply

    return mod


def _warn_if_secagg_clips(context, dense: dict[str, np.ndarray], num_examples: int) -> None:
    """SecAgg+ clips each weighted value (delta x examples / max_weight) to
    +-clipping_range before quantizing it, silently: say so on the device
    when this delta is cut (the server cannot tell from the masked sum)."""
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_STATE

    state = context.state.config_records.get(RECORD_KEY_STATE)
    if state is None or not state.get("clipping_range") or not state.get("max_weight"):
        return
    ratio = min(1.0, num_examples / float(state["max_weight"]))
    largest = max((float(np.abs(v).max()) for v in dense.values() if v.size), default=0.0) * ratio
    if largest > float(state["clipping_range"]):
        import logging

        logging.getLogger("tflm_train.fleet").warning(
            "SecAgg+ clips this delta: a weighted value of %.3g exceeds the clipping range +-%g "
            "(raise SecAggConfig.clipping_range)", largest, float(state["clipping_range"]))


def _legacy_delta_reply(reply, start, layout: AdapterLayout, encoding: str, top_k: float | None, context=None):
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
    ends = parameters_to_ndarrays(fitres.parameters)
    end = {slot.name: np.asarray(a, np.float32).reshape(slot.shape) for slot, a in zip(layout.slots, ends)}
    delta = Delta.between(layout, start, end, encoding=encoding, top_k=top_k, num_examples=fitres.num_examples)
    dense = delta.dense(layout)
    if context is not None:
        _warn_if_secagg_clips(context, dense, fitres.num_examples)
    fitres.parameters = ndarrays_to_parameters([dense[name] for name in layout.names])
    fitres.metrics = {**fitres.metrics, "base-model-hash": f"{layout.base_model_hash:016x}",
                      "layout-hash": f"{layout.layout_hash:08x}", "delta-bytes": delta.nbytes}
    reply.content = compat.fitres_to_recorddict(fitres, keep_input=True)
    return reply


def make_client_app(
    model: bytes | str | Path,
    load_partition: LoadPartition,
    *,
    learning_rate: float = 0.02,
    learning_rate_decay: float = 1.0,
    local_epochs: int = 1,
    encoding: str = "float32",
    top_k: float | None = None,
    dropout: float = 0.0,
    seed: int = 0,
    mods: Sequence = (),
    secagg: bool = False,
):
    """A Flower `ClientApp` whose local training is a `TrainableModel`.

    model           the converted .tflite (bytes or path) every client runs
    load_partition  (partition_id, num_partitions) -> (x, y): the client's
                    local data (called once per client per process, cached)
    learning_rate   the device's learning rate (the train message's config
                    "learning-rate" overrides it for a round)
    learning_rate_decay
                    per-round factor: round r trains at lr * decay**(r - 1)
                    (config "learning-rate-decay" overrides it)
    local_epochs    passes over the local data per round
    encoding        "float32" or "int8" delta (delta.py); top_k: optional
                    fraction of each tensor's largest changes sent
    dropout         probability that a client fails a round (simulated
                    device loss; its reply is an error, the round goes on)
    seed            seeds the data order and the simulated dropout
    mods            Flower client mods that see the full adapter (DP clipping,
                    attack harnesses), inside the delta encoding
    secagg          add Flower's secaggplus_mod (outermost): use with
                    make_server_app(..., secagg=SecAggConfig(...))
    """
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    if encoding not in ENCODINGS:
        raise ValueError(f"delta encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    if top_k is not None and not 0.0 < top_k <= 1.0:
        raise ValueError(f"top-k fraction {top_k}: use a value in (0, 1]")
    model_bytes = _read_model(model)
    layout = AdapterLayout.of_model(model_bytes)
    partitions: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def local_data(context):
        pid = int(context.node_config.get("partition-id", 0))
        count = int(context.node_config.get("num-partitions", 1))
        if pid not in partitions:
            x, y = load_partition(pid, count)
            partitions[pid] = (np.asarray(x), np.asarray(y))
        return pid, partitions[pid]

    def own_state(context) -> bytes | None:
        record = context.state.config_records.get(STATE_RECORD)
        return None if record is None else bytes(record["state"])

    def train(msg, context):
        config = next(iter(msg.content.config_records.values()), {})
        legacy = _is_legacy(msg.content)
        if legacy:
            config = msg.content.config_records["fitins.config"]
        server_round = int(config.get("server-round", config.get("round", 0)))
        pid, (x, y) = local_data(context)
        draw = random.Random(f"{seed}:{server_round}:{pid}").random()
        if dropout and draw < dropout:
            raise ClientDropout(f"client {pid} dropped out of round {server_round} (simulated)")
        adapter = _legacy_adapter(msg.content, layout) if legacy else \
            _adapter_from_arrays(next(iter(msg.content.array_records.values())), layout)
        state, loss = train_locally(
            model_bytes, own_state(context), adapter, x, y,
            learning_rate=round_learning_rate(float(config.get("learning-rate", learning_rate)),
                                              float(config.get("learning-rate-decay", learning_rate_decay)),
                                              server_round),
            local_epochs=int(config.get("local-epochs", local_epochs)),
            seed=client_seed(seed, server_round, pid),
        )
        context.state.config_records[STATE_RECORD] = ConfigRecord({"state": state})
        new = layout.adapter(state)
        if legacy:
            from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
            from flwr.compat.common import recorddict_compat as compat

            fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([new[n] for n in layout.names]), len(x),
                            {"train-loss": loss})
            return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)
        content = RecordDict({
            "arrays": ArrayRecord({name: Array(new[name]) for name in layout.names}),
            "metrics": MetricRecord({"num-examples": len(x), "train-loss": loss}),
        })
        return Message(content, reply_to=msg)

    def evaluate(msg, context):
        """The received adapter's metric on the client's local data."""
        from tflm_train.fitting import evaluate as evaluate_metric, task_of

        _, (x, y) = local_data(context)
        model, _ = _runtime(model_bytes)
        adapter = _adapter_from_arrays(next(iter(msg.content.array_records.values())), layout)
        model.reset()
        model.load_state(layout.with_adapter(model.save_state(), adapter))
        task = task_of(model)
        value = evaluate_metric(model, x, y, task)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": len(x), task.metric: value})}),
                       reply_to=msg)

    chain = list(mods)
    chain.insert(0, delta_mod(layout, encoding, top_k))
    if secagg:
        from flwr.client.mod import secaggplus_mod

        chain.insert(0, secaggplus_mod)
    app = ClientApp(mods=chain)
    app.train()(train)
    app.evaluate()(evaluate)
    return app


__all__ = ["ClientDropout", "DELTA_RECORD", "client_seed", "delta_mod", "make_client_app", "round_learning_rate",
           "train_locally"]
