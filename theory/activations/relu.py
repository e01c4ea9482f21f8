"""The ReLU activation g(z) = max(0, z): its marker, derivatives and Gaussian integrals, alone and
paired with erf and the linear activation.

g'(z) = Theta(z) with g'(0) = 0 (as autograd frameworks take it; a set of measure zero for the
theory), and g'' = delta, which the simulations take as 0 (its value almost everywhere: the
pathwise second derivative of a finite support set) and the theory through Price's theorem.
``metaode.theory.derive_relu`` derives every integral with sympy into ``relu_kernels``, this
module's only source of formulas: the arc-cosine kernel I2 and its partials, J2, and I4 for every
partition of its fields into equal ones, elementary except through the orthant moment
``orthant.sign4`` (a one-dimensional quadrature). I2 and its partials are regular where fields
are collinear (a student unit parallel to a teacher unit: the point the dynamics specialise to);
the generic I4 is 0 / 0 there, so ``fields_of`` merges collinear ReLU fields as it merges equal
ones.

Integrals of two fields are routed by the kinds of their activations (``_kinds``), as in
``theory.activations.linear``. The slices of I4 are this module's ``I4_forms`` for every pair
with a ReLU member: it knows the indices (k, l, a, b) of the fields, so it calls the kernel of the
partition they form (k = l, a = k, a repeated teacher field, ...), where a product on one field
has to be formed before the integral (Theta(z) Theta(z) = Theta(z)); a ReLU field makes the
generic closed form 0 / 0 there, while erf's and the linear activation's are regular.

The four-point moments F4 of the few-shot theory are kernels of every partition too, their
gradient off the diagonal by Price's theorem (``F4_pairs``), on it by the homogeneity of ReLU
(``_F4_gradient``). Not implemented for ReLU: I3 and the gradients of J2, I3, I4 (the exact sgd
Jacobian; a ReLU network's Jacobian is by central differences, ``theory.jacobian``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import overload

from metaode.theory.activations import registry as act
from metaode.theory.activations import relu_kernels as kernels
from metaode.theory.activations.erf import Erf
from metaode.theory.activations.linear import Linear
from metaode.theory.activations.orthant import PAIRS


class ReLU(NamedTuple):
    """The marker of g(z) = max(0, z) (no parameters)."""


def _kind(t) -> str | None:
    if act.is_marker(t, ReLU):
        return "r"
    if act.is_marker(t, Erf):
        return "e"
    if act.is_marker(t, Linear):
        return "l"
    return None


def _kinds(*types_) -> str | None:
    """The kinds ("e" erf, "l" linear, "r" ReLU) of the markers' types, or None when one of them
    is none of these or none is ReLU (then the integral is not this module's)."""
    kinds = [_kind(t) for t in types_]
    if None in kinds or "r" not in kinds:
        return None
    return "".join(kinds)


@overload(act.g)
def _g(a, z):
    if _kinds(a) == "r":
        return lambda a, z: max(0.0, z)


@overload(act.g_prime)
def _g_prime(a, z):
    if _kinds(a) == "r":
        return lambda a, z: 1.0 if z > 0.0 else 0.0


@overload(act.g_second)
def _g_second(a, z):
    if _kinds(a) == "r":
        return lambda a, z: 0.0


act.route_two_field_integrals(_kinds, kernels)


@overload(act.J2)
def _J2(s, c11, c22, c12):
    if _kinds(s) == "r":
        return lambda s, c11, c22, c12: kernels.J2_r(c11, c22, c12)


#: Two fields p, q count as collinear (z_q = s z_p) when Omega_pq^2 >= (1 - COLLINEAR)
#: Omega_pp Omega_qq: below that gap the generic closed form loses its accuracy to cancellation
#: (tests/test_relu_integrals.py); the snap moves I4 by O(sqrt(gap)) (~2 sqrt(gap) measured),
#: ~6e-7 at most.
COLLINEAR = 1e-13
#: The gap below which fields are merged when the generic closed form of an entry is not finite:
#: two pairs of fields both within ~1e-11 of collinearity (a student unit specialised to its
#: teacher unit to 1e-5, twice) can make a determinant of its formula round to 0. The snap then
#: moves that entry by up to ~6e-5 (O(sqrt(gap))).
FALLBACK_COLLINEAR = 1e-9


@njit(cache=True)
def fields_of(omega: np.ndarray, idx: tuple, relu: tuple, collinear: float):
    """(code, representatives, scales) of four fields idx (indices into omega), code the
    ``derive_relu.partition_code`` of the partition they form: two ReLU fields
    are one when their indices are equal or when they are collinear (1 - r^2 below
    ``collinear``: ``COLLINEAR`` or ``FALLBACK_COLLINEAR``), z_q = s z_p with
    s = sqrt(Omega_qq / Omega_pp) > 0, so that Theta(z_q) = Theta(z_p) and relu(z_q) =
    s relu(z_p): the kernel of that partition on the representatives' entries, times the scale
    s_i of each position that carries a value relu(z_i) (1 where the field is its own or equal
    by index). ``relu[i]``: whether field i is a ReLU field. Anti-collinear ReLU fields
    (z_q = -s z_p) are a ValueError: their kernels are not derived."""
    rep = [idx[0], idx[1], idx[2], idx[3]]
    scales = [1.0, 1.0, 1.0, 1.0]
    code = 0
    for i in range(4):
        label = i
        for j in range(i):
            if idx[j] == idx[i]:
                label = j
                scales[i] = scales[j]
                break
            if relu[i] and relu[j]:
                p, q = idx[j], idx[i]
                cross = omega[p, q]
                if cross * cross >= (1.0 - collinear) * omega[p, p] * omega[q, q]:
                    if cross < 0.0:
                        raise ValueError("ReLU integrals of anti-collinear fields (a unit equal "
                                         "to minus another) are not implemented")
                    label = j
                    scales[i] = scales[j] * np.sqrt(omega[q, q] / omega[p, p])
                    break
        rep[i] = rep[label]
        code = 4 * code + label
    return code, (rep[0], rep[1], rep[2], rep[3]), (scales[0], scales[1], scales[2], scales[3])


_ERF, _LINEAR = Erf(), Linear()


@njit(cache=True)
def _I4_eeee(code, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    """erf's I4, through the generic function (regular where fields coincide: the partition does
    not matter)."""
    return act.I4(_ERF, _ERF, _ERF, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34)


@njit(cache=True)
def _I4_llll(code, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34):
    """The linear activation's I4, through the generic function (regular where fields
    coincide)."""
    return act.I4(_LINEAR, _LINEAR, _LINEAR, c11, c22, c33, c44, c12, c13, c14, c23, c24, c34)


def _slice_kernel(kinds: str):
    """The I4 kernel (code, c11, ..) of a word of kinds (k, l, a, b)."""
    if "r" in kinds:
        return getattr(kernels, f"I4_{kinds}")
    return {"eeee": _I4_eeee, "llll": _I4_llll}[kinds]


@njit(cache=True)
def _entries(C: np.ndarray, reps: tuple) -> tuple:
    """(c11, .., c44, c12, .., c34) of C on the fields ``reps``."""
    i, j, c, d = reps
    return (C[i, i], C[j, j], C[c, c], C[d, d], C[i, j], C[i, c], C[i, d], C[j, c], C[j, d],
            C[c, d])


@overload(act.I4_forms)
def _I4_forms(s, t, omega, K, pairs, X, parallel, out):
    sk, tk = _kind(s), _kind(t)
    if sk is None or tk is None or "r" not in sk + tk:
        return None
    sss, sst, stt = (_slice_kernel(sk * 4), _slice_kernel(sk * 3 + tk),
                     _slice_kernel(sk * 2 + tk * 2))
    s_relu, t_relu = sk == "r", tk == "r"

    def forms(s, t, omega, K, pairs, X, parallel, out):
        n = omega.shape[0]
        row, Y = np.empty((n, n)), np.empty((n, X.shape[1]))
        for p in range(pairs.shape[0]):
            k, l = pairs[p, 0], pairs[p, 1]
            for a in range(n):
                for b in range(a, n):
                    relu = (s_relu, s_relu, s_relu if a < K else t_relu,
                            s_relu if b < K else t_relu)
                    v = np.nan
                    for collinear in (COLLINEAR, FALLBACK_COLLINEAR):
                        code, reps, sc = fields_of(omega, (k, l, a, b), relu, collinear)
                        scale = sc[2] * sc[3]  # the values relu(z_a), relu(z_b)
                        args = _entries(omega, reps)
                        if b < K:
                            v = scale * sss(code, *args)
                        elif a < K:
                            v = scale * sst(code, *args)
                        else:
                            v = scale * stt(code, *args)
                        if np.isfinite(v):
                            break
                    row[a, b] = row[b, a] = v
            act.quadratic_forms(row, X, Y, out[p])
    return forms


@overload(act.F4)
def _F4(f1, f2, f3, f4, C4, nodes, weights):
    kinds = _kinds(f1, f2, f3, f4)
    if kinds is None:
        return None
    kernel = getattr(kernels, f"F4_{kinds}")
    relu = tuple(k == "r" for k in kinds)

    def four_point(f1, f2, f3, f4, C4, nodes, weights):
        value = np.nan
        for collinear in (COLLINEAR, FALLBACK_COLLINEAR):
            code, reps, sc = fields_of(C4, (0, 1, 2, 3), relu, collinear)
            value = sc[0] * sc[1] * sc[2] * sc[3] * kernel(code, *_entries(C4, reps))
            if np.isfinite(value):
                break
        return value
    return four_point


@overload(act.F4_gradient)
def _F4_gradient(f1, f2, f3, f4, C4, nodes, weights):
    kinds = _kinds(f1, f2, f3, f4)
    if kinds is None:
        return None
    value_kernel = getattr(kernels, f"F4_{kinds}")
    pairs_kernel = getattr(kernels, f"F4_pairs_{kinds}")
    relu = tuple(k == "r" for k in kinds)
    erf = tuple(k == "e" for k in kinds)

    def four_point_gradient(f1, f2, f3, f4, C4, nodes, weights):
        """Off the diagonal Price's theorem (``F4_pairs``); on it, for ReLU and linear positions
        the homogeneity of degree 1 of F4 in z_p, 2 C_pp dF/dC_pp + sum_q C_pq dF/dC_pq = F4,
        for erf ones Stein's lemma with g'' = -z g', dF/dC_pp = -1/2 sum_q C_pq dF/dC_pq /
        (1 + C_pp) (as ``erf_fourpoint``)."""
        grad = np.empty((4, 4))
        for collinear in (COLLINEAR, FALLBACK_COLLINEAR):
            code, reps, sc = fields_of(C4, (0, 1, 2, 3), relu, collinear)
            args = _entries(C4, reps)
            F = sc[0] * sc[1] * sc[2] * sc[3] * value_kernel(code, *args)
            pairs = pairs_kernel(code, *args)
            for n in range(6):
                p, q, r, s = PAIRS[n]
                grad[p, q] = grad[q, p] = sc[r] * sc[s] * pairs[n]
            for p in range(4):
                acc = 0.0
                for q in range(4):
                    if q != p:
                        acc += C4[p, q] * grad[p, q]
                if erf[p]:
                    grad[p, p] = -0.5 * acc / (1.0 + C4[p, p])
                else:
                    grad[p, p] = (F - acc) / (2.0 * C4[p, p])
            if np.all(np.isfinite(grad)):
                break
        return grad
    return four_point_gradient


act.register(act.Activation("relu", ReLU(), "g(z) = max(0, z)", smooth=False),
             pairs=("erf", "linear"))
for _other in (ReLU, Erf, Linear):
    act.own_I4_forms(ReLU, _other)
    act.own_I4_forms(_other, ReLU)
