"""Search the distribution K = {k_1 .. k_N} over the pattern period dp.

Each training iteration samples dp ~ K and then b uniformly in {0 .. dp-1};
the pattern keeps one unit in every dp, so it drops the fraction
r_i = (i - 1) / i of the units when dp = i. A unit is dropped with
probability sum_i k_i r_i (paper Eq. 2), which must equal the target rate p.

Two methods:

``paper``
    Algorithm 1 of Song et al. as published: gradient descent on v in R^N,
    d = softmax(v), loss = l1 (d . r - p)^2 + l2 (1/N) sum_i d_i log d_i.
    For large N its optimum is bimodal (about 1 - p of the iterations with
    dp = 1, i.e. no dropout at all, the rest with very large dp, i.e. almost
    everything dropped); the result carries a warning saying so.

``bounded`` (default; also the C++ layers' built-in default)
    See :func:`bounded_search`: exact rate, every iteration's dropped
    fraction within 0.05 of p (where regular patterns allow it), and on
    that support the most (dp, b) sub-models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("bounded", "paper")

# Tolerances shared with the C++ layer (approx_dropout_pattern.cpp).
LAYER_RATE_TOLERANCE = 0.01   # |sum k_i r_i - dropout_ratio| the layer accepts
LAYER_SUM_TOLERANCE = 1e-4    # |sum k_i - 1| the layer accepts
# DefaultPatternDistribution's support: |1/dp - (1 - p)| <= min(band, relative_band (1 - p)).
DEFAULT_BAND = 0.05           # absolute: every iteration drops within 0.05 of p
DEFAULT_RELATIVE_BAND = 0.5   # relative: every iteration keeps (1 +- 0.5)(1 - p)
# bounded_search's spread never exceeds max(SPREAD_BOUND, the bracketing pair's
# spread) with the default bands (tests check it for p in [0, 0.95], N <= 4096).
SPREAD_BOUND = 0.05
_EPS = 1e-12                  # ties between r_i and p (C++: eps)
_BAND_SLACK = 1e-6            # C++ receives p as float; see bounded_search

# A per-iteration dropped-fraction spread above this is reported as bimodal.
BIMODAL_SPREAD = 0.25


class SearchError(ValueError):
    """Invalid search input, or a rate no distribution over dp <= N reaches."""


def pattern_rates(max_dp: int) -> np.ndarray:
    """r_i = (i - 1) / i for i = 1 .. max_dp: the fraction pattern dp = i drops."""
    i = np.arange(1, max_dp + 1, dtype=np.float64)
    return (i - 1) / i


def check_inputs(p: float, max_dp: int) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)):
        raise SearchError(f"dropout rate must be a number, got {p!r}")
    if not (math.isfinite(p) and 0 <= p < 1):
        raise SearchError(f"dropout rate must be in [0, 1), got {p}")
    if isinstance(max_dp, bool) or not isinstance(max_dp, (int, np.integer)):
        raise SearchError(f"max dp (N) must be an integer, got {max_dp!r}")
    if max_dp < 1:
        raise SearchError(f"max dp (N) must be at least 1, got {max_dp}")


def max_reachable_rate(max_dp: int) -> float:
    return (max_dp - 1) / max_dp


@dataclass
class SearchResult:
    """A distribution over dp and what it does to training."""
    method: str
    target: float                 # p asked for
    max_dp: int                   # N
    distribution: np.ndarray      # k_1 .. k_N
    iterations: int = 0           # gradient steps (paper)
    converged: bool = True        # |delta loss| < threshold before the cap
    warnings: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Probability that a unit is dropped: sum_i k_i (i - 1) / i."""
        return float(self.distribution @ pattern_rates(self.max_dp))

    @property
    def spread(self) -> float:
        """Standard deviation of one iteration's dropped fraction r_dp."""
        r = pattern_rates(self.max_dp)
        return float(math.sqrt(max(0.0, self.distribution @ (r - self.rate) ** 2)))

    @property
    def compute_fraction(self) -> float:
        """Expected fraction of the dense work done: sum_i k_i / i (= 1 - rate)."""
        i = np.arange(1, self.max_dp + 1, dtype=np.float64)
        return float(self.distribution @ (1 / i))

    @property
    def sub_models(self) -> int:
        """Distinct (dp, b) pairs with non-zero probability (dp = i offers i)."""
        i = np.arange(1, self.max_dp + 1)
        return int(i[self.distribution > 0].sum())

    @property
    def effective_sub_models(self) -> float:
        """exp(entropy of (dp, b)): how many equally likely sub-models it is worth."""
        return math.exp(pair_entropy(self.distribution))

    @property
    def no_dropout(self) -> float:
        """P(dp = 1): iterations that drop nothing."""
        return float(self.distribution[0])

    def support(self, floor: float = 0.0) -> list[tuple[int, float]]:
        """(dp, k_dp) for every dp with k_dp > floor."""
        return [(i + 1, float(k)) for i, k in enumerate(self.distribution) if k > floor]

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "target_rate": self.target, "max_dp": self.max_dp,
            "rate": self.rate, "spread": self.spread,
            "compute_fraction": self.compute_fraction,
            "sub_models": self.sub_models,
            "effective_sub_models": self.effective_sub_models,
            "no_dropout": self.no_dropout,
            "iterations": self.iterations, "converged": self.converged,
            "warnings": list(self.warnings),
            "distribution": [float(k) for k in self.distribution],
        }


def pair_entropy(k: np.ndarray) -> float:
    """Entropy of the (dp, b) pair: H(K) + sum_i k_i log i (b is uniform)."""
    i = np.arange(1, len(k) + 1, dtype=np.float64)
    nz = k > 0
    return float(-(k[nz] * np.log(k[nz] / i[nz])).sum())


def bracket(p: float, max_dp: int) -> tuple[int, int]:
    """(lo, hi): the largest dp whose rate is <= p and the smallest whose rate is >= p."""
    r = pattern_rates(max_dp)
    lo = int(np.nonzero(r <= p + _EPS)[0].max()) + 1
    hi = int(np.nonzero(r >= p - _EPS)[0].min()) + 1
    return lo, hi


def bounded_support(p: float, max_dp: int, band: float = DEFAULT_BAND,
                    relative_band: float = DEFAULT_RELATIVE_BAND) -> np.ndarray:
    """The periods (1-based, ascending, contiguous) bounded_search may use."""
    q = 1.0 - p
    width = min(band, relative_band * q) + _BAND_SLACK
    i = np.arange(1, max_dp + 1, dtype=np.float64)
    inside = np.abs(1.0 / i - q) <= width
    lo, hi = bracket(p, max_dp)
    if not (inside[lo - 1] and inside[hi - 1]):
        return np.array(sorted({lo, hi}))
    return np.nonzero(inside)[0] + 1


def bounded_search(p: float, max_dp: int, band: float = DEFAULT_BAND,
                   relative_band: float = DEFAULT_RELATIVE_BAND) -> SearchResult:
    r"""The default distribution: exact rate, bounded spread, most sub-models.

    Support. With q = 1 - p (the kept fraction), the band is the set of
    periods dp whose own kept fraction 1/dp satisfies

        |1/dp - q| <= min(band, relative_band * q)        (+ 1e-6, see below).

    Let lo = max{i : r_i <= p} and hi = min{i : r_i >= p} be the periods
    that bracket p. If both lie in the band, the support is the band (a run
    of consecutive dp around 1/q); otherwise it is {lo, hi}, the least
    spread with which p can be reached at all. Since |1/dp - q| = |r_dp - p|:

    * band (0.05) bounds every iteration's dropped fraction, so the spread
      (std of one iteration's dropped fraction) is at most 0.05, except
      where only the bracket pair can be used: below p = 1/2 (only dp = 1
      and 2; spread 0.245 at p = 0.3), on (1/2, 2/3) (dp = 2, 3; up to
      1/12) and on [2/3, 3/4) where dp = 3 or 4 is more than 0.05 from p.
      (Adding band periods to an out-of-band bracket breaks the bound:
      p = 0.75 - 1e-9 with dp = 3, 4, 5 spreads 0.053; so does a band of
      0.055: p = 0.745, N = 5, dp = 3, 4, 5, spread 0.054.)
    * relative_band (0.5) keeps every iteration's kept fraction within
      (1 +- 0.5) q. It matters above p = 0.9 only, where band alone would
      admit dp up to N: at p = 0.95, N = 4096 about half of the iterations
      would then keep under 1 % of the units, the rest about 10 %.

    So p = 0.5 is dp = 2 always, p = 0.3 is dp = 1 (40 %) and 2 (60 %),
    p = 0.7 is dp = 3 (60 %) and 4 (40 %), p = 0.9 spreads over dp = 7 .. 20.

    Objective. Among the K on S with sum_i k_i r_i = p, maximise the entropy
    of the sampled pair (dp, b):

        H(dp, b) = -sum_i k_i log k_i + sum_i k_i log i,

    since b is uniform over i values when dp = i. With Lagrange multipliers
    for sum_i k_i = 1 and sum_i k_i r_i = p the maximiser is

        k_i = i exp(lambda r_i) / Z(lambda),   i in S,

    whose rate is increasing in lambda (its derivative is the variance of
    r under K), so lambda is found by bisection (on +-64 i_max^2, beyond
    what any p at least 1e-12 inside the support needs) and the rate is met
    to machine precision. When p is within 1e-12 of the smallest or largest
    rate in S (p = 0, or p = (N - 1)/N, or p = 0.75 whose support is
    dp = 4, 5) all mass goes to that period. Each of the sum_{i in S} i
    sub-models is reachable.

    The C++ layers use exactly this (DefaultPatternDistribution in
    approx_dropout_pattern.cpp) when pattern_distribution is empty; a test
    compares the two on a table of (p, N). The support test uses only
    +, -, *, / (the same bits in both languages), and its 1e-6 slack makes
    p given as a float such as 0.7f select the support of 0.7; the weights
    use exp, whose last bit may differ, so the table is compared within
    1e-9.
    """
    check_inputs(p, max_dp)
    for name, value in (("band", band), ("relative band", relative_band)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                or not (math.isfinite(value) and value >= 0):
            raise SearchError(f"{name} must be a non-negative number, got {value!r}")
    r = pattern_rates(max_dp)
    if p > r[-1] + _EPS:
        raise SearchError(
            f"dropout rate {p} cannot be reached with dp <= {max_dp}: the largest "
            f"rate is {r[-1]:.6g} (every unit but one in {max_dp}); raise the max dp")
    support = bounded_support(p, max_dp, band, relative_band) - 1  # 0-based
    k = np.zeros(max_dp)
    rs = r[support]
    if len(support) == 1 or p >= rs[-1] - _EPS:
        k[support[-1]] = 1.0
        return SearchResult("bounded", float(p), max_dp, k)
    if p <= rs[0] + _EPS:
        k[support[0]] = 1.0
        return SearchResult("bounded", float(p), max_dp, k)
    periods = support + 1.0

    def weights(lam: float) -> tuple[np.ndarray, float]:
        z = lam * rs
        w = periods * np.exp(z - z.max())
        w /= w.sum()
        return w, float(w @ rs)

    top = float(periods[-1])
    a, b = -64.0 * top * top, 64.0 * top * top
    for _ in range(200):
        mid = 0.5 * (a + b)
        if mid == a or mid == b:  # a, b adjacent doubles: nothing changes any more
            break
        if weights(mid)[1] < p:
            a = mid
        else:
            b = mid
    k[support] = weights(0.5 * (a + b))[0]
    return SearchResult("bounded", float(p), max_dp, k)


def paper_search(p: float, max_dp: int, lambda1: float = 0.9, lr: float = 1.0,
                 threshold: float = 1e-12, max_iter: int = 20000, seed: int = 0,
                 init_scale: float = 0.01) -> SearchResult:
    r"""Algorithm 1 of Song et al. (Sec. III-C), as published.

    v ~ N(0, init_scale^2) (seeded), then plain gradient descent on

        loss(v) = l1 (d . r - p)^2 + l2 (1/N) sum_i d_i log d_i,
        d = softmax(v), l2 = 1 - l1,

    until |loss_t - loss_{t-1}| < threshold or max_iter steps. The gradient
    through the softmax is dL/dv = d * (g - d . g) with
    g = dL/dd = 2 l1 (d . r - p) r + (l2 / N) (log d + 1).

    The defaults reproduce the numbers in shared/PAPER.md (l1 = 0.9; for
    N = 2048, k_1 = 0.699 / 0.498 / 0.297 at p = 0.3 / 0.5 / 0.7). Warnings
    are attached when the rate misses p by more than the layer accepts,
    when p is beyond (N - 1) / N, when the step cap was hit, and when the
    per-iteration dropped fraction is bimodal.
    """
    check_inputs(p, max_dp)
    if not 0 <= lambda1 <= 1:
        raise SearchError(f"lambda1 must be in [0, 1] (lambda2 = 1 - lambda1), got {lambda1}")
    if not (lr > 0 and math.isfinite(lr)):
        raise SearchError(f"learning rate must be positive, got {lr}")
    if not threshold > 0:
        raise SearchError(f"threshold must be positive, got {threshold}")
    if max_iter < 1:
        raise SearchError(f"max_iter must be at least 1, got {max_iter}")
    v = np.random.default_rng(seed).normal(0.0, init_scale, max_dp)
    previous = math.inf
    converged = False
    steps = 0
    for steps in range(1, max_iter + 1):
        loss, grad = paper_loss(v, p, lambda1)
        if abs(loss - previous) < threshold:
            converged = True
            break
        previous = loss
        v -= lr * grad
    d = softmax(v)
    result = SearchResult("paper", float(p), max_dp, d, iterations=steps,
                          converged=converged)
    _paper_warnings(result, lambda1, max_iter)
    return result


def softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def paper_loss(v: np.ndarray, p: float, lambda1: float) -> tuple[float, np.ndarray]:
    """Algorithm 1's loss at v and its gradient with respect to v."""
    n = len(v)
    r = pattern_rates(n)
    z = v - v.max()
    log_d = z - math.log(np.exp(z).sum())
    d = np.exp(log_d)
    rate = float(d @ r)
    lambda2 = 1.0 - lambda1
    loss = lambda1 * (rate - p) ** 2 + lambda2 * float(d @ log_d) / n
    g = 2 * lambda1 * (rate - p) * r + (lambda2 / n) * (log_d + 1)
    return loss, d * (g - d @ g)


def _paper_warnings(result: SearchResult, lambda1: float, max_iter: int) -> None:
    p, n = result.target, result.max_dp
    if p > max_reachable_rate(n):
        result.warnings.append(
            f"unreachable: with dp <= {n} no distribution drops more than "
            f"{max_reachable_rate(n):.4g} of the units; the search returned rate "
            f"{result.rate:.4f}")
    elif abs(result.rate - p) > LAYER_RATE_TOLERANCE:
        result.warnings.append(
            f"missed: rate {result.rate:.4f} is {abs(result.rate - p):.4f} from p = {p} "
            f"(the layers accept {LAYER_RATE_TOLERANCE}); the entropy term "
            f"(lambda2 = {1 - lambda1:.3g}) pulls mass away from the periods that "
            f"reach p with N = {n}")
    if not result.converged:
        result.warnings.append(
            f"not converged: stopped at the cap of {max_iter} steps")
    if result.spread > BIMODAL_SPREAD:
        r = pattern_rates(n)
        heavy = float(result.distribution[r >= 0.875].sum())
        result.warnings.append(
            f"bimodal: {result.no_dropout:.3f} of the iterations drop nothing "
            f"(dp = 1) and {heavy:.3f} drop 7/8 or more (dp >= 8); the dropped "
            f"fraction varies by {result.spread:.3f} (std) from iteration to "
            f"iteration, unlike Bernoulli dropout. Use the bounded method")


def search(p: float, max_dp: int, method: str = "bounded", **options: Any) -> SearchResult:
    """Run one of METHODS; options go to bounded_search or paper_search."""
    if method == "bounded":
        return bounded_search(p, max_dp, **options)
    if method == "paper":
        return paper_search(p, max_dp, **options)
    raise SearchError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def check_distribution(k: Any, p: float) -> np.ndarray:
    """Validate a user-given k_1 .. k_N for rate p as the layers do; return it."""
    check_inputs(p, 1)
    try:
        values = np.asarray(k, dtype=np.float64)
    except (TypeError, ValueError):
        raise SearchError(f"pattern distribution must be a list of numbers, got {k!r}") from None
    if values.ndim != 1 or values.size == 0:
        raise SearchError("pattern distribution must be a non-empty list k_1 .. k_N")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise SearchError(f"pattern distribution entries must be >= 0, got {values.tolist()}")
    total = float(values.sum())
    if abs(total - 1) > LAYER_SUM_TOLERANCE:
        raise SearchError(f"pattern distribution sums to {total:.6g}, not 1")
    rate = float(values @ pattern_rates(values.size))
    if abs(rate - p) > LAYER_RATE_TOLERANCE:
        raise SearchError(f"pattern distribution drops units with probability {rate:.4f}, "
                          f"but the dropout ratio is {p} (they must agree within "
                          f"{LAYER_RATE_TOLERANCE})")
    return values


# The (p, N) grid on which the C++ default and bounded_search are compared:
# test_data/approx_dropout_default_distributions.txt holds bounded_search's
# output for it (scripts/regenerate.py table writes it), and a gtest checks
# DefaultPatternDistribution against it.
TABLE_RATES = (0.0, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.55, 0.6, 2 / 3, 0.7,
               0.75, 0.8, 0.85, 0.9, 0.92, 0.95, 0.97, 0.99)
TABLE_MAX_DP = (1, 2, 3, 4, 5, 8, 16, 20, 64, 200, 4096)
TABLE_DIGITS = 12   # k_i are written with %.12g: exp's last bit varies by CPU


def default_distribution_table() -> str:
    """One line per (p, N): 'p N i:k_i ...' over non-zero k, or 'p N unreachable'.

    p is the float32 value (what a layer reads from dropout_ratio) written
    with repr, so C++'s strtod gets the same double. k_i is written with 12
    significant digits: the weights go through exp, whose last bit differs
    between libms and SIMD paths, so readers compare within 1e-9 (see
    parse_distribution_table) and the text does not change with the machine.
    """
    lines = ["# bounded_search(p, N) = C++ DefaultPatternDistribution(p, N), within 1e-9.",
             "# Generated by: scripts/regenerate.py table"]
    for p in TABLE_RATES:
        p32 = float(np.float32(p))
        for n in TABLE_MAX_DP:
            if p32 > max_reachable_rate(n) + _EPS:
                lines.append(f"{p32!r} {n} unreachable")
                continue
            k = bounded_search(p32, n).distribution
            lines.append(f"{p32!r} {n} " + " ".join(
                f"{i + 1}:{float(v):.{TABLE_DIGITS}g}" for i, v in enumerate(k) if v > 0))
    return "\n".join(lines) + "\n"


def parse_distribution_table(text: str) -> dict[tuple[float, int], dict[int, float] | None]:
    """{(p, N): {dp: k_dp} over the non-zero k, or None where unreachable}."""
    table: dict[tuple[float, int], dict[int, float] | None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        try:
            key = (float(fields[0]), int(fields[1]))
            if fields[2:] == ["unreachable"]:
                value = None
            else:
                value = {int(dp): float(v) for dp, v in
                         (entry.split(":") for entry in fields[2:])}
        except (IndexError, ValueError):
            raise ValueError(f"line {number}: bad table line {line!r}") from None
        if key in table:
            raise ValueError(f"line {number}: duplicate (p, N) {key}")
        table[key] = value
    return table


def compare_distribution_tables(expected: str, actual: str, tol: float = 1e-9) -> list[str]:
    """Differences between two tables: keys, reachability, support, values beyond tol."""
    a, b = parse_distribution_table(expected), parse_distribution_table(actual)
    problems = [f"(p, N) = {key} only in the {side} table"
                for side, x, y in (("first", a, b), ("second", b, a)) for key in x if key not in y]
    for key in a.keys() & b.keys():
        ka, kb = a[key], b[key]
        if ka is None or kb is None:
            if ka is not kb:
                problems.append(f"{key}: unreachable in one table only")
            continue
        if sorted(ka) != sorted(kb):
            problems.append(f"{key}: support {sorted(ka)} != {sorted(kb)}")
            continue
        for dp in ka:
            if abs(ka[dp] - kb[dp]) > tol:
                problems.append(f"{key}: k_{dp} {ka[dp]!r} != {kb[dp]!r}")
    return problems
