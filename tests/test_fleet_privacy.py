"""Client-level differential privacy (tflm_train/fleet/privacy.py): the
accountant against dp-accounting and Flower's own RDP accountant computed
directly, Flower's fixedclipping_mod bounding what a client sends, and the
DP strategy adding noise of the stated size to the aggregate."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.federated


def test_accountant_matches_a_direct_dp_accounting_computation():
    import dp_accounting as dpa
    from dp_accounting import rdp

    from tflm_train.fleet.privacy import ClientLevelAccountant

    orders = (2, 3, 4, 6, 8, 12, 16, 24, 32)  # few orders: the test stays fast
    accountant = ClientLevelAccountant(population=100, sample_size=10, noise_multiplier=1.3, delta=1e-5, orders=orders)
    spent = [accountant.step() for _ in range(4)]
    assert spent == sorted(spent) and spent[0] > 0 and accountant.rounds == 4
    # Sampling without replacement, replace-one neighbours: one client moves
    # the sum of clipped updates by 2C, so the event's multiplier is z / 2.
    direct = rdp.RdpAccountant(orders=orders, neighboring_relation=dpa.NeighboringRelation.REPLACE_ONE)
    for _ in range(4):
        direct.compose(dpa.SampledWithoutReplacementDpEvent(100, 10, dpa.GaussianDpEvent(1.3 / 2)))
    assert spent[-1] == pytest.approx(direct.get_epsilon(1e-5), rel=1e-9)
    assert accountant.epsilon_after(4) == pytest.approx(spent[-1], rel=1e-9)

    # Poisson sampling: the same number as Flower's RDP accountant (which
    # wraps dp-accounting too) for the same event and orders.
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod)
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant as FlowerRdp

    poisson = ClientLevelAccountant(100, 10, 1.3, 1e-5, sampling="poisson", orders=orders)
    flower = FlowerRdp(PrivacyConfig(1e-5, 100, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.POISSON),
                       orders=tuple(float(o) for o in orders))
    flower.compose(GaussianPrivacyEvent(noise_multiplier=1.3, sample_size=10, population_size=100), count=4)
    assert poisson.epsilon_after(4) == pytest.approx(flower.get_epsilon(1e-5), rel=1e-9)
    # Poisson with add/remove is the weaker (smaller epsilon) analysis.
    assert poisson.epsilon_after(4) < spent[-1]


def test_noise_for_epsilon_is_the_smallest_noise_within_budget():
    from tflm_train.fleet.privacy import ClientLevelAccountant, noise_for_epsilon

    orders = (2, 3, 4, 6, 8, 12, 16, 24, 32)
    z = noise_for_epsilon(8.0, rounds=5, population=100, sample_size=10, tolerance=1e-2, orders=orders)
    assert ClientLevelAccountant(100, 10, z, orders=orders).epsilon_after(5) <= 8.0
    assert ClientLevelAccountant(100, 10, z - 0.02, orders=orders).epsilon_after(5) > 8.0
    with pytest.raises(ValueError, match="sample size"):
        ClientLevelAccountant(10, 11, 1.0)


def test_cohort_for_noise_is_the_smallest_cohort_under_the_noise_level():
    from tflm_train.fleet.privacy import cohort_for_noise, noise_for_epsilon

    orders = (2, 3, 4, 6, 8, 12, 16, 24, 32)

    def std(m, population):  # the noise std on the average, in units of C
        return noise_for_epsilon(8.0, 5, population, m, tolerance=1e-3, orders=orders) / m

    # Fixed sampling rate 10%: the population grows with the cohort.
    target = 0.5 * std(10, 100)
    m, z = cohort_for_noise(8.0, 5, target, sampling_rate=0.1, orders=orders)
    assert m > 10 and z / m <= target
    assert std(m, 10 * m) <= target < std(m - 1, 10 * (m - 1))
    # Fixed population: the cohort grows inside it (the sampling rate rises).
    m_fixed, z_fixed = cohort_for_noise(8.0, 5, target, population=1000, orders=orders)
    assert z_fixed / m_fixed <= target < std(m_fixed - 1, 1000)
    with pytest.raises(ValueError, match="no cohort"):
        cohort_for_noise(8.0, 5, 1e-4, population=100, orders=orders)
    with pytest.raises(ValueError, match="exactly one"):
        cohort_for_noise(8.0, 5, 0.1, orders=orders)


def _task_identity():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def test_fixedclipping_mod_bounds_the_update_a_client_sends():
    """Flower's fixedclipping_mod in our ClientApp chain: the update (reply
    minus what the round sent) is scaled to the clipping norm when longer,
    left alone when shorter; every reply weighs 1."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    from tflm_train.fleet.privacy import WEIGHT_KEY, dp_client_mods, update_norm

    _task_identity()
    rng = np.random.default_rng(0)
    start = {"lora_A": rng.normal(size=(4, 8)).astype(np.float32), "lora_B": np.zeros((3, 4), np.float32)}
    clip = 0.5
    for size in (10.0, 0.1):
        step = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
        scale = size / update_norm(list(step.values()))
        end = {k: start[k] + scale * step[k] for k in start}

        def app(msg, context, end=end):
            return Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in end.items()}),
                                       "metrics": MetricRecord({"num-examples": 17})}), reply_to=msg)

        call = app
        for mod in reversed(dp_client_mods()):
            call = (lambda m, c, mod=mod, inner=call: mod(m, c, inner))
        msg = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in start.items()}),
                                  "config": ConfigRecord({KEY_CLIPPING_NORM: clip})}),
                      dst_node_id=7, message_type=MessageType.TRAIN)
        reply = call(msg, Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={}))
        got = {k: a.numpy() for k, a in reply.content.array_records["arrays"].items()}
        sent = update_norm([got[k] - start[k] for k in start])
        assert sent == pytest.approx(min(size, clip), rel=1e-5)
        assert reply.content.metric_records["metrics"][WEIGHT_KEY] == 1


def test_dp_strategy_adds_noise_of_the_stated_size(digits):
    """One round, every client: the DP run's adapter minus the same run
    without noise is the Gaussian noise, std z * C / m."""
    from tflm_train.converter import ConvertConfig, convert
    from tflm_train.fleet.client_app import make_client_app
    from tflm_train.fleet.local_grid import run_local
    from tflm_train.fleet.privacy import dp_client_mods, dp_strategy
    from tflm_train.fleet.server_app import RoundLog, make_server_app

    model = convert(digits.int8_model, ConvertConfig(method="lora", r=4, targets="last:3")).model
    x, y = digits.user_train.x, digits.user_train.y
    parts = np.array_split(np.arange(len(x)), 4)
    z, clip = 2.0, 0.05

    def adapter(noise):
        log = RoundLog()
        client = make_client_app(model, lambda pid, n: (x[parts[pid]], y[parts[pid]]), learning_rate=0.02,
                                 mods=dp_client_mods())
        strategy = dp_strategy(noise, clip, 4, fraction_train=1.0, min_train_nodes=4, min_available_nodes=4)
        run_local(make_server_app(model, rounds=1, strategy=strategy, round_log=log), client, 4)
        return np.concatenate([v.reshape(-1) for v in log.final_adapter.values()])

    difference = adapter(z) - adapter(0.0)
    assert difference.size > 500
    assert np.std(difference) == pytest.approx(z * clip / 4, rel=0.12)
    assert abs(np.mean(difference)) < 4 * z * clip / 4 / np.sqrt(difference.size)
