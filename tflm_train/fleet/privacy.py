"""Client-level differential privacy for federated adapter training.

The mechanism is Flower's: every client clips its adapter update to an L2
norm C (`flwr.clientapp.mod.fixedclipping_mod`, the last mod of the
ClientApp), and the server's `DifferentialPrivacyClientSideFixedClipping`
wrapper adds Gaussian noise of standard deviation z * C / m to the average of
the m sampled clients' updates (z: the noise multiplier). So the SUM of the
clipped updates carries noise z * C.

The privacy spent is computed here with Google's dp-accounting (RDP
accountant), for the sampling Flower actually does, round by round:

  without-replacement  (default) each round samples exactly m of the N
                       clients, uniformly without replacement, and the
                       denominator m is fixed. Neighbouring fleets differ in
                       one client's data (replace-one), under which one
                       client moves the sum of clipped updates by up to 2C:
                       the Gaussian event's noise multiplier is z / 2
                       (SampledWithoutReplacementDpEvent, Wang, Balle and
                       Kasiviswanathan 2019).
  poisson              each client takes part with probability q = m / N
                       (add-or-remove-one, sensitivity C: noise multiplier z;
                       PoissonSampledDpEvent). This is the DP-FedAvg analysis
                       of McMahan et al. 2018; it is only valid when the
                       server samples that way, so it is here for
                       comparison, not the default.

What is protected: a whole client's participation (all its samples), not a
single sample. The accountant covers the released adapters; the per-round
training metrics the clients report (loss, sample count) are not private.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SAMPLING = ("without-replacement", "poisson")
# Integer orders: the sampled-without-replacement bound has a closed form for
# them (fractional orders cost seconds each); its cost grows fast with the
# order, and epsilons of 0.5-50 are reached at orders well below 64.
DEFAULT_ORDERS = tuple(range(2, 33)) + (40, 48, 56, 64)


def _dp():
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError:
        from tflm_train.errors import UserError

        raise UserError('privacy accounting needs dp-accounting: pip install "tflm-train[federated]"') from None
    return dp_accounting, rdp


@dataclass
class ClientLevelAccountant:
    """(epsilon, delta) of the released global adapters after each round.

    population: N clients; sample_size: m sampled per round; noise_multiplier:
    z as Flower's DP wrapper takes it (noise std z * C / m on the average).
    """

    population: int
    sample_size: int
    noise_multiplier: float
    delta: float = 1e-5
    sampling: str = "without-replacement"
    orders: tuple = DEFAULT_ORDERS  # the RDP orders epsilon is minimized over
    rounds: int = field(default=0, init=False)  # rounds recorded by step()
    history: list[float] = field(default_factory=list, init=False)  # epsilon after each round
    _accountant: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLING:
            raise ValueError(f"sampling {self.sampling!r}: use one of {', '.join(SAMPLING)}")
        if not 0 < self.sample_size <= self.population:
            raise ValueError(f"sample size {self.sample_size} must be in [1, population {self.population}]")
        if not self.noise_multiplier > 0:
            raise ValueError("the noise multiplier must be positive for a finite epsilon")
        if not 0 < self.delta < 1:
            raise ValueError("delta must be in (0, 1)")

    def event(self, rounds: int = 1):
        """The dp-accounting event of `rounds` rounds."""
        dpa, _ = _dp()
        if self.sampling == "poisson":
            one = dpa.PoissonSampledDpEvent(self.sample_size / self.population,
                                            dpa.GaussianDpEvent(self.noise_multiplier))
        else:
            one = dpa.SampledWithoutReplacementDpEvent(self.population, self.sample_size,
                                                       dpa.GaussianDpEvent(self.noise_multiplier / 2.0))
        return dpa.SelfComposedDpEvent(one, rounds)

    def relation(self):
        dpa, _ = _dp()
        return (dpa.NeighboringRelation.ADD_OR_REMOVE_ONE if self.sampling == "poisson"
                else dpa.NeighboringRelation.REPLACE_ONE)

    def epsilon_after(self, rounds: int) -> float:
        """Epsilon at self.delta after `rounds` rounds (0 rounds: 0)."""
        if rounds <= 0:
            return 0.0
        _, rdp = _dp()
        accountant = rdp.RdpAccountant(orders=self.orders, neighboring_relation=self.relation())
        accountant.compose(self.event(rounds))
        return float(accountant.get_epsilon(self.delta))

    def step(self, rounds: int = 1) -> float:
        """Records `rounds` more released aggregates; returns epsilon so far."""
        _, rdp = _dp()
        if self._accountant is None:
            self._accountant = rdp.RdpAccountant(orders=self.orders, neighboring_relation=self.relation())
        self._accountant.compose(self.event(rounds))
        self.rounds += rounds
        epsilon = float(self._accountant.get_epsilon(self.delta))
        self.history.append(epsilon)
        return epsilon

    @property
    def epsilon(self) -> float:
        return self.epsilon_after(self.rounds)


def noise_for_epsilon(epsilon: float, rounds: int, population: int, sample_size: int, delta: float = 1e-5,
                      sampling: str = "without-replacement", tolerance: float = 1e-3,
                      orders: tuple = DEFAULT_ORDERS) -> float:
    """The smallest noise multiplier z whose epsilon after `rounds` rounds is
    at most `epsilon` (bisection on the accountant; epsilon falls as z grows)."""
    def eps(z: float) -> float:
        return ClientLevelAccountant(population, sample_size, z, delta, sampling, orders=orders).epsilon_after(rounds)

    low, high = 0.05, 1.0
    while eps(high) > epsilon:
        low, high = high, high * 2
        if high > 1e4:
            raise ValueError(f"no noise multiplier reaches epsilon {epsilon} in {rounds} rounds")
    while high - low > tolerance:
        mid = (low + high) / 2
        low, high = (mid, high) if eps(mid) > epsilon else (low, mid)
    return high


def cohort_for_noise(epsilon: float, rounds: int, noise_std: float, *, sampling_rate: float | None = None,
                     population: int | None = None, delta: float = 1e-5, max_sample_size: int = 100_000,
                     orders: tuple = DEFAULT_ORDERS) -> tuple[int, float]:
    """The smallest number m of clients per round whose noise on the average,
    z * C / m in units of C, is at most `noise_std` at `epsilon` after
    `rounds` rounds (the DP wrapper's noise std is z * C / m). Either the
    sampling rate stays fixed (population = m / sampling_rate) or the
    population does (m <= population). Returns (m, z).

    A computed estimate of the cohort a target needs: it assumes the useful
    noise level (measured at a smaller cohort) stays the same."""
    if (sampling_rate is None) == (population is None):
        raise ValueError("give exactly one of sampling_rate and population")

    def fleet(m: int) -> int:
        return population if population is not None else max(m, round(m / sampling_rate))

    def fits(m: int) -> tuple[bool, float]:
        z = noise_for_epsilon(epsilon, rounds, fleet(m), m, delta, tolerance=1e-3, orders=orders)
        return z / m <= noise_std, z

    # Doubling, then bisection: z / m falls as m grows.
    limit = population if population is not None else max_sample_size
    low, high = 0, 1  # invariant: low does not fit (0: nothing tried), high is the candidate
    ok, z_high = fits(high)
    while not ok:
        if high >= limit:
            raise ValueError(f"no cohort of at most {limit} clients keeps the noise std at {noise_std:g} C")
        low, high = high, min(2 * high, limit)
        ok, z_high = fits(high)
    while high - low > 1:
        mid = (low + high) // 2
        ok, z = fits(mid)
        if ok:
            high, z_high = mid, z
        else:
            low = mid
    return high, z_high


def update_norm(update: list[np.ndarray]) -> float:
    """The L2 norm of a whole update (all tensors flattened together), as
    Flower's clipping measures it."""
    return float(math.sqrt(sum(float(np.sum(np.square(np.asarray(u, np.float64)))) for u in update)))




# ---- Flower's DP pieces, wired for tflm-train's delta fleet -------------------------
WEIGHT_KEY = "dp-weight"


def uniform_weight_mod(msg, context, call_next):
    """A Flower client mod: every train reply weighs the same in the average
    (metric "dp-weight" = 1). The DP analysis needs it: a client with many
    samples must not count more than one with few (num-examples weighting
    would scale its clipped update past the clipping norm)."""
    from flwr.app import MessageType

    reply = call_next(msg, context)
    if msg.metadata.message_type == MessageType.TRAIN and not reply.has_error():
        for record in reply.content.metric_records.values():
            record[WEIGHT_KEY] = 1
    return reply


def dp_client_mods() -> list:
    """The ClientApp mods of a DP fleet, outermost first (inside delta_mod):
    Flower's fixedclipping_mod clips `adapter after - adapter received` to
    the norm the server sends; the uniform weight is set before it."""
    from flwr.clientapp.mod import fixedclipping_mod

    return [fixedclipping_mod, uniform_weight_mod]


def dp_strategy(noise_multiplier: float, clipping_norm: float, num_sampled_clients: int, *,
                fraction_train: float, min_train_nodes: int, min_available_nodes: int):
    """Flower's FedAvg (uniform weights) inside Flower's
    DifferentialPrivacyClientSideFixedClipping: it sends the clipping norm
    to the clients and adds Gaussian noise, std noise_multiplier *
    clipping_norm / num_sampled_clients, to the averaged adapter."""
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg

    inner = FedAvg(fraction_train=fraction_train, fraction_evaluate=0.0, min_train_nodes=min_train_nodes,
                   min_available_nodes=min_available_nodes, weighted_by_key=WEIGHT_KEY)
    return DifferentialPrivacyClientSideFixedClipping(inner, noise_multiplier, clipping_norm, num_sampled_clients)

__all__ = ["SAMPLING", "WEIGHT_KEY", "ClientLevelAccountant", "cohort_for_noise", "dp_client_mods", "dp_strategy",
           "noise_for_epsilon", "uniform_weight_mod", "update_norm"]
