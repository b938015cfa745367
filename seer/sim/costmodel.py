"""Per-step time of one inference instance: a roofline of bytes and FLOPs with fitted efficiencies.

    T(step) = c0 + c_l * layers + a_w * weight_bytes / BW + a_kv * kv_bytes / BW + a_lin * linear_flops / PEAK
              + a_attn * attention_flops / PEAK + communication

BW and PEAK are the instance's aggregate measured ceilings (GPUs x per-GPU). The terms are summed, not
maxed, so a decode step is affine in the batch's context sum, T = alpha(B) + beta * sum(ctx), which lets
the simulator advance a batch in closed form between events and gives a strict lower bound.
The coefficients are fitted (non-negative least squares on relative error) to measured H100
profiles: one set for dense GQA models, one for MLA + MoE models (`benchmarks/costmodel_fit.py`).

Approximations, stated: tensor-parallel all-reduce is an analytic ring model (NVLink bandwidth plus a
fixed latency per collective), not measured; expert-parallel all-to-all likewise, over RDMA; MoE routing
is uniform (expected distinct experts touched), without load imbalance; a DP+EP instance (Kimi-K2) is
treated as perfectly balanced across its data-parallel ranks; H800 is taken as H100 (same HBM and
tensor throughput; its lower NVLink bandwidth is in the preset).
"""

from __future__ import annotations

import importlib.resources
import math
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from seer.sim.cost_kernels import PARAMS, price_step, price_steps
from seer.sim.shapes import Hardware, ModelShape, Parallelism

COEF_KEYS = ("overhead_s", "layer_overhead_s", "weights", "kv", "linear", "attention", "scores")


@dataclass(frozen=True)
class Coefficients:
    """Fitted efficiencies: seconds of fixed overhead, and multipliers on ideal roofline times."""

    overhead_s: float
    layer_overhead_s: float
    weights: float
    kv: float
    linear: float
    attention: float
    scores: float = 0.0


def family_of(shape: ModelShape) -> str:
    return "mla_moe" if shape.attention == "mla" else "dense"


def fitted_coefficients(family: str) -> Coefficients:
    """The committed fit for a model family (seer/presets/coefficients.toml)."""
    data = tomllib.loads((importlib.resources.files("seer.presets") / "coefficients.toml").read_text())
    return Coefficients(**{k: float(data[family][k]) for k in COEF_KEYS})


@runtime_checkable
class StepTimeModel(Protocol):
    """What the simulator needs of a step-time model (the roofline `CostModel`, or a `StepFit` calibrated on a
    real engine's measured steps). `waiting`: requests queued on the instance (a real engine's CPU cost per step
    grows with them; the roofline model ignores it).

    A decode step of B sequences with cached contexts summing to S costs alpha(B) + beta * S; `decode_span` and
    `steps_within` follow from that (see `AffineDecode`). `lower_bound` returns the makespan bounds of
    `seer.sim.bounds`, or None when the model has no roofline terms to bound with.
    """

    beta: float
    kv_bytes_per_token: float  # bytes of KV per token, for global-pool transfers

    def step_time_sums(
        self,
        tokens: float,
        kv_tokens: float,
        attn_pairs: float,
        score_pairs: float,
        logits: float | None = None,
        waiting: int = 0,
    ) -> float: ...

    def alpha(self, batch, waiting: int = 0): ...

    def decode_span(self, batch: int, ctx_sum: float, steps, waiting: int = 0): ...

    def steps_within(self, batch: int, ctx_sum: float, seconds: float, waiting: int = 0) -> int: ...

    def lower_bound(
        self,
        prompt_len: Sequence[int],
        output_len: Sequence[int],
        instances: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        tokens_per_step: float = 1,
        prefill_tokens: float | None = None,
    ) -> dict | None: ...

    def lower_bound_steps(
        self,
        prompt_len: Sequence[int],
        output_len: Sequence[int],
        steps: Sequence[int],
        kv_terms: Sequence[int],
        instances: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        prefill_tokens: float | None = None,
    ) -> dict | None: ...

    def describe(self) -> dict: ...


class AffineDecode:
    """Decode spans of a model whose decode step is alpha(B) + beta * sum(ctx) (subclasses give both)."""

    beta: float

    def alpha(self, batch, waiting: int = 0):
        raise NotImplementedError

    def decode_time(self, batch: int, ctx_sum: float, waiting: int = 0) -> float:
        """One decode step of `batch` sequences whose cached contexts sum to `ctx_sum` (`waiting` requests queued)."""
        return self._alpha_of(batch, waiting) + self.beta * ctx_sum

    def _alpha_of(self, batch: int, waiting: int) -> float:
        """`alpha` of one integer batch, remembered: the simulator asks for the same few batch sizes at every epoch,
        and a model's coefficients do not change after it is built."""
        memo = self.__dict__.setdefault("_alpha_memo", {})
        key = (batch, waiting)
        a = memo.get(key)
        if a is None:
            a = memo[key] = float(self.alpha(batch, waiting))
        return a

    def decode_span(self, batch: int, ctx_sum: float, steps, waiting: int = 0):
        """Total seconds of `steps` decode steps; every sequence grows by one token per step (closed form)."""
        if isinstance(steps, (int, np.integer)):  # the simulator's case: Python floats, the same IEEE arithmetic
            n = float(steps)
            return self._alpha_of(batch, waiting) * n + self.beta * (n * ctx_sum + batch * n * (n - 1) / 2)
        n = np.asarray(steps, dtype=np.float64)
        return float(self.alpha(batch, waiting)) * n + self.beta * (n * ctx_sum + batch * n * (n - 1) / 2)

    def steps_within(self, batch: int, ctx_sum: float, seconds: float, waiting: int = 0) -> int:
        """Largest n with decode_span(n) <= seconds (closed-form root of the quadratic)."""
        a, b = self._alpha_of(batch, waiting), self.beta
        if seconds <= 0:
            return 0
        # b*B/2 n^2 + (a + b*S - b*B/2) n - seconds <= 0
        qa, qb = b * batch / 2, a + b * ctx_sum - b * batch / 2
        n = seconds / qb if qa == 0 else (-qb + math.sqrt(qb * qb + 4 * qa * seconds)) / (2 * qa)
        n = int(math.floor(n + 1e-9))
        while n > 0 and self.decode_span(batch, ctx_sum, n, waiting) > seconds * (1 + 1e-12):
            n -= 1
        while self.decode_span(batch, ctx_sum, n + 1, waiting) <= seconds:
            n += 1
        return n


class CostModel(AffineDecode):
    """Step times of one instance running `shape` on `par.gpus` GPUs of kind `hw`."""

    def __init__(
        self,
        shape: ModelShape,
        hw: Hardware = Hardware(),
        par: Parallelism = Parallelism(),
        coef: Coefficients | None = None,
    ):
        self.shape, self.hw, self.par = shape, hw, par
        self.coef = coef or fitted_coefficients(family_of(shape))
        g = par.gpus
        self.bw = hw.hbm_gbps * 1e9 * g
        self.peak = hw.bf16_tflops * 1e12 * g
        s = shape
        self._always_bytes = s.always_read_params() * s.weight_bytes * par.dp
        self._expert_bytes = s.expert_params() * s.weight_bytes * s.moe_layers
        self._lin_per_token = 2.0 * s.active_params_per_token()
        self._logit_flops = 2.0 * s.vocab * s.hidden
        self._kvb = s.kv_bytes_per_token
        self._apf = s.attn_flops_per_pair
        self._score_bytes = 8.0 * s.q_heads * s.layers  # fp32 score written and read once per pair
        c = self.coef
        # decode: T = alpha(B) + beta * sum(ctx), ctx = tokens cached before the step
        self.beta = c.kv * self._kvb / self.bw + c.attention * self._apf / self.peak
        # the step model's constants by the names `seer.sim.cost_kernels.PARAMS` gives them, its sub-expressions
        # evaluated once, in the order the formula evaluates them
        lat = hw.allreduce_latency_us * 1e-6
        vals = dict(
            base=c.overhead_s + c.layer_overhead_s * s.layers,
            weights=c.weights,
            always_bytes=self._always_bytes,
            expert_bytes=self._expert_bytes,
            n_experts=s.n_experts,
            keep=(1.0 - s.top_k / s.n_experts) if s.n_experts else 0.0,
            bw=self.bw,
            kv=c.kv,
            kv_bytes=self._kvb,
            linear=c.linear,
            lin_per_token=self._lin_per_token,
            logit_flops=self._logit_flops,
            peak=self.peak,
            attention=c.attention,
            attn_flops=self._apf,
            scores=c.scores,
            score_bytes=self._score_bytes,
        )
        vals.update(dict.fromkeys(("tp", "two_l", "tp_latency", "tp_hidden", "ring", "link"), 0))
        if par.tp > 1:
            vals.update(tp=1, two_l=2 * s.layers, tp_latency=lat, tp_hidden=s.hidden, ring=2.0 * (par.tp - 1) / par.tp)
            vals.update(link=hw.link_gbps * 1e9)
        vals.update(dict.fromkeys(("ep", "two_moe", "ep_latency", "dp", "top_k", "ep_hidden", "net"), 0))
        if par.dp > 1 and s.n_experts:
            vals.update(ep=1, two_moe=2 * s.moe_layers, ep_latency=lat, dp=par.dp, top_k=s.top_k, ep_hidden=s.hidden)
            vals.update(net=hw.network_gbps * 1e9)
        assert vals.keys() == set(PARAMS), set(PARAMS) ^ vals.keys()
        self.price_params = np.array([vals[k] for k in PARAMS], dtype=np.float64)

    @property
    def kv_bytes_per_token(self) -> float:
        return self.shape.kv_bytes_per_token

    # ---- features ------------------------------------------------------------------------------

    def weight_read_bytes(self, tokens):
        return self._always_bytes + self.shape.experts_touched(tokens) * self._expert_bytes

    def comm_s(self, tokens):
        """Collective time per step: TP all-reduce (2 per layer) and EP all-to-all (2 per MoE layer)."""
        s, hw, par = self.shape, self.hw, self.par
        t = 0.0
        if par.tp > 1:
            ring = 2.0 * (par.tp - 1) / par.tp
            t = t + 2 * s.layers * (
                hw.allreduce_latency_us * 1e-6 + tokens * s.hidden * 2 * ring / (hw.link_gbps * 1e9)
            )
        if par.dp > 1 and s.n_experts:
            per_rank = tokens / par.dp
            t = t + 2 * s.moe_layers * (
                hw.allreduce_latency_us * 1e-6 + per_rank * s.top_k * s.hidden * 2 / (hw.network_gbps * 1e9)
            )
        return t

    def features(self, q, ctx, logits=None) -> np.ndarray:
        """Roofline seconds [1, layers, weights, kv, linear, attention, scores] of one step.

        q: new tokens per sequence in the step; ctx: tokens already cached per sequence;
        logits: positions that need logits (default: every new token, as decode and verification do).
        """
        q = np.asarray(q, dtype=np.float64)
        ctx = np.asarray(ctx, dtype=np.float64)
        tokens = q.sum()
        logits = tokens if logits is None else logits
        multi = q > 1  # verification / prefill rows: unfused attention materialises fp32 scores
        return np.array(
            [
                1.0,
                float(self.shape.layers),
                self.weight_read_bytes(tokens) / self.bw,
                ((ctx + q).sum() * self._kvb) / self.bw,
                (tokens * self._lin_per_token + logits * self._logit_flops) / self.peak,
                (q * (ctx + (q + 1) / 2)).sum() * self._apf / self.peak,
                (q * (ctx + q) * multi).sum() * self._score_bytes / self.bw,
            ]
        )

    def step_time(self, q, ctx, logits=None) -> float:
        """Seconds for one step over sequences with `q` new and `ctx` cached tokens each."""
        q = np.asarray(q, dtype=np.float64)
        ctx = np.asarray(ctx, dtype=np.float64)
        multi = q > 1
        return self.step_time_sums(
            float(q.sum()),
            float((ctx + q).sum()),
            float((q * (ctx + (q + 1) / 2)).sum()),
            float((q * (ctx + q))[multi].sum()),
            logits,
        )

    def step_time_sums(
        self,
        tokens: float,
        kv_tokens: float,
        attn_pairs: float,
        score_pairs: float,
        logits: float | None = None,
        waiting: int = 0,
    ) -> float:
        """`step_time` from the batch's sums: new tokens, KV tokens read, attention and score pairs (scalars, or
        arrays of one step each: a speculative epoch's steps)."""
        # one formula, compiled (`seer.sim.cost_kernels`); tests/test_costmodel.py checks it bit for bit against the
        # formula written with `weight_read_bytes` and `comm_s`, for scalars and for every element of arrays
        if not isinstance(tokens, np.ndarray):
            logits = tokens if logits is None else logits
            p = self.price_params
            return price_step(p, float(tokens), float(kv_tokens), float(attn_pairs), float(score_pairs), float(logits))
        cols = (tokens, kv_tokens, attn_pairs, score_pairs, tokens if logits is None else logits)
        if tokens.ndim == 1 and all(
            type(x) is np.ndarray and x.shape == tokens.shape and x.dtype == np.float64 for x in cols
        ):
            return price_steps(self.price_params, *cols)
        cols = np.broadcast_arrays(*(np.asarray(x, np.float64) for x in cols))
        flat = [np.ascontiguousarray(x).ravel() for x in cols]
        return price_steps(self.price_params, *flat).reshape(cols[0].shape)

    def alpha(self, batch, waiting: int = 0) -> np.ndarray | float:
        """Context-independent part of a decode step of `batch` sequences (vectorised over batch)."""
        b = np.asarray(batch, dtype=np.float64)
        c = self.coef
        t = (
            c.overhead_s
            + c.layer_overhead_s * self.shape.layers
            + c.weights * self.weight_read_bytes(b) / self.bw
            + c.linear * b * (self._lin_per_token + self._logit_flops) / self.peak
            + self.beta * b
            + self.comm_s(b)
        )
        return t if t.ndim else float(t)

    def token_time(self, tokens: float) -> float:
        """Step time that depends only on the number of tokens in the step (no logits, no context)."""
        c = self.coef
        return float(
            c.overhead_s
            + c.layer_overhead_s * self.shape.layers
            + c.weights * self.weight_read_bytes(tokens) / self.bw
            + c.linear * tokens * self._lin_per_token / self.peak
            + self.comm_s(tokens)
        )

    def logit_time(self) -> float:
        """Seconds of logit FLOPs per sampled position."""
        return self.coef.linear * self._logit_flops / self.peak

    def attention_time(self, pairs: float) -> float:
        """Seconds of the attention term for `pairs` (query, key) pairs, in whichever steps they fall."""
        return self.coef.attention * pairs * self._apf / self.peak

    def lower_bound(self, *args, **kwargs) -> dict:
        """`seer.sim.bounds.makespan_lower_bound` under this model (the `StepModel` protocol gives the signature)."""
        from seer.sim.bounds import makespan_lower_bound

        return makespan_lower_bound(self, *args, **kwargs)

    def lower_bound_steps(self, *args, **kwargs) -> dict:
        """`seer.sim.bounds.makespan_lower_bound_steps` under this model."""
        from seer.sim.bounds import makespan_lower_bound_steps

        return makespan_lower_bound_steps(self, *args, **kwargs)

    def prefill_time(self, tokens: int, cached: int = 0) -> float:
        """One sequence's prefill of `tokens` new tokens over `cached` cached ones, in one step."""
        return self.step_time([tokens], [cached], logits=1)

    def describe(self) -> dict:
        return {
            "model": self.shape.name,
            "gpus": self.par.gpus,
            "tp": self.par.tp,
            "dp": self.par.dp,
            "coefficients": asdict(self.coef),
        }


def fit_coefficients(rows: list[tuple[CostModel, np.ndarray, np.ndarray, float | None, float]]) -> Coefficients:
    """Non-negative least squares on relative error.

    rows: (cost model of the profiled shape, q, ctx, logits, measured seconds).
    """
    X = np.array([cm.features(q, ctx, logits) for cm, q, ctx, logits, _ in rows])
    y = np.array([r[-1] for r in rows])
    return Coefficients(**dict(zip(COEF_KEYS, map(float, nnls_relative(X, y)))))


def nnls_relative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients c minimising the relative error of X @ c against y (active-set, dropping
    the most negative coefficient until all are >= 0)."""
    A, b = X / y[:, None], np.ones(len(y))
    active = list(range(X.shape[1]))
    while True:
        sol, *_ = np.linalg.lstsq(A[:, active], b, rcond=None)
        if (sol >= 0).all():
            break
        active.pop(int(np.argmin(sol)))
    coef = np.zeros(X.shape[1])
    coef[active] = sol
    return coef
