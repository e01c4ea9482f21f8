"""The sympy derivation of ``theory.derive`` and the generated kernels
(``theory/activations/erf_kernels.py``).

Identities are checked on the derived sympy expressions by routes other than the derivation's:
Stein's lemma and Price's theorem (including its diagonal form dE[F]/dC_ii = 1/2 E[d^2F/dz_i^2])
linking J2, I2, I3 and I4, the factorisation of I4 into independent blocks, and the closed form of
E[g'(z1) g'(z2) g'(z3) g'(z4)]. ``sympy.simplify`` does not close these (square roots of products
of real symbols have no fixed branch), so each identity lhs == rhs is evaluated at exact rational
covariances, positive definite, with 60 significant digits, and |lhs - rhs| <= 1e-45 max(1, |rhs|)
is required: a wrong formula differs by O(1), rounding at 60 digits is ~1e-58.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import metaode.theory.activations.erf_kernels as erf_kernels
from metaode.theory import derive, derive_linear, derive_relu

c11, c22, c33, c44, c12, c13, c14, c23, c24, c34 = sp.symbols(
    "c11 c22 c33 c44 c12 c13 c14 c23 c24 c34", real=True)
DIGITS = 60
IDENTITY_TOL = sp.Float("1e-45", DIGITS)


def test_generated_file_is_current() -> None:
    """theory/activations/erf_kernels.py is exactly what the derivation generates."""
    target = Path(derive.__file__).parent / "activations" / "erf_kernels.py"
    assert derive.generated_source() == target.read_text(), (
        "theory/activations/erf_kernels.py is out of date: run `python -m metaode.theory.derive`")


def test_generated_linear_file_is_current() -> None:
    """theory/activations/linear_kernels.py is exactly what ``theory.derive_linear`` generates
    (its kernels are checked against numerical integration in tests/test_linear_integrals.py)."""
    target = Path(derive.__file__).parent / "activations" / "linear_kernels.py"
    assert derive_linear.generated_source() == target.read_text(), (
        "theory/activations/linear_kernels.py is out of date: run "
        "`python -m metaode.theory.derive`")


def test_generated_relu_file_is_current() -> None:
    """theory/activations/relu_kernels.py is exactly what ``theory.derive_relu`` generates (its
    kernels are checked against numerical integration in tests/test_relu_integrals.py)."""
    target = Path(derive.__file__).parent / "activations" / "relu_kernels.py"
    assert derive_relu.generated_source() == target.read_text(), (
        "theory/activations/relu_kernels.py is out of date: run "
        "`python -m metaode.theory.derive`")


# --- derived expressions and evaluation points ---------------------------------------------------

J2_EXPR = derive.derive_J2()
I2_EXPR = derive.derive_I2()
I3_EXPR = derive.derive_I3()
I4_EXPR = derive.derive_I4()


def J2(a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    """The derived J2 at covariance entries (a, b, c) = (c11, c22, c12)."""
    return J2_EXPR.subs({c11: a, c22: b, c12: c}, simultaneous=True)


def I2(a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    """The derived I2 at covariance entries (a, b, c) = (c11, c22, c12)."""
    return I2_EXPR.subs({c11: a, c22: b, c12: c}, simultaneous=True)


def dI2_dc11(a: sp.Expr, b: sp.Expr, c: sp.Expr) -> sp.Expr:
    """sympy.diff(I2, c11) at (a, b, c)."""
    return sp.diff(I2_EXPR, c11).subs({c11: a, c22: b, c12: c}, simultaneous=True)


def I3(a, b, c, ab, ac, bc) -> sp.Expr:
    """The derived I3 at (c11, c22, c33, c12, c13, c23) = (a, b, c, ab, ac, bc)."""
    return I3_EXPR.subs({c11: a, c22: b, c33: c, c12: ab, c13: ac, c23: bc}, simultaneous=True)


SYMBOLS = {2: (c11, c22, c12), 3: (c11, c22, c33, c12, c13, c23),
           4: (c11, c22, c33, c44, c12, c13, c14, c23, c24, c34)}


def rational_covariances(n: int) -> list[dict[sp.Symbol, sp.Rational]]:
    """Exact positive definite covariances as substitutions {c_ij: value}, generic (no zero
    entries): three C = S (A A^T + I) S / 16 with A an integer matrix (entries -5..5) and
    S = diag(k / 10), k in 1..10; plus a nearly rank-one v v^T + 1e-10 I (v_i nonzero)."""
    rng = np.random.default_rng(n)
    matrices = []
    while len(matrices) < 3:
        A = sp.Matrix(rng.integers(-5, 6, (n, n)).tolist())
        S = sp.diag(*[sp.Rational(int(k), 10) for k in rng.integers(1, 11, n)])
        C = S * (A * A.T + sp.eye(n)) * S / 16
        if all(C):
            matrices.append(C)
    v = sp.Matrix([sp.Rational(int(k), 7) for k in rng.choice([-3, -2, -1, 1, 2, 3, 5], n)])
    matrices.append(v * v.T + sp.Rational(1, 10**10) * sp.eye(n))
    points = []
    for C in matrices:
        assert C.is_positive_definite
        points.append({s: C[i, j] for s, (i, j) in zip(SYMBOLS[n], _index_pairs(n), strict=True)})
    return points


def _index_pairs(n: int) -> list[tuple[int, int]]:
    """(i, j) of the kernel arguments: diagonals first, then the upper triangle row-major."""
    return [(i, i) for i in range(n)] + [(i, j) for i in range(n) for j in range(i + 1, n)]


def assert_identity(lhs: sp.Expr, rhs: sp.Expr, n: int) -> None:
    """lhs == rhs at every rational_covariances(n) point, to IDENTITY_TOL at DIGITS digits."""
    for point in rational_covariances(n):
        difference = (lhs - rhs).evalf(DIGITS, subs=point)
        size = sp.Abs(rhs).evalf(DIGITS, subs=point)
        assert sp.Abs(difference) <= IDENTITY_TOL * sp.Max(1, size), (point, difference, size)


# --- identities ----------------------------------------------------------------------------------

def test_I2_vanishes_at_zero_correlation() -> None:
    """g is odd, so E[g(z1) g(z2)] = E[g(z1)] E[g(z2)] = 0 at c12 = 0 (exactly)."""
    assert I2_EXPR.subs(c12, 0) == 0


def test_price_theorem_I2() -> None:
    """Price's theorem: dI2/dc12 = E[g'(z1) g'(z2)] = J2."""
    assert_identity(sp.diff(I2_EXPR, c12), J2_EXPR, 2)


def test_price_theorem_diagonal_links_I2_and_I3() -> None:
    """dI2/dc11 = 1/2 E[g''(z1) g(z2)] = -1/2 E[z1 g'(z1) g(z2)] (g''(z) = -z g'(z)), which is
    -1/2 I3 at the covariance of (z1, z1, z2): (c11, c11, c22, c11, c12, c12)."""
    assert_identity(sp.diff(I2_EXPR, c11), -I3(c11, c11, c22, c11, c12, c12) / 2, 2)


def test_stein_I3_uncorrelated() -> None:
    """Stein's lemma on z2: I3 = c12 E[g''(z1) g(z3)] + c23 E[g'(z1) g'(z3)], at c12 = 0
    I3 = c23 J2(c11, c33, c13)."""
    assert_identity(I3_EXPR.subs(c12, 0), c23 * J2(c11, c33, c13), 3)


def test_stein_I3_general() -> None:
    """Stein's lemma on z2 and Price's diagonal form E[g''(z1) g(z3)] = 2 dI2/dc11(c11, c33, c13):
    I3 = 2 c12 dI2/dc11(c11, c33, c13) + c23 J2(c11, c33, c13)."""
    rhs = 2 * c12 * dI2_dc11(c11, c33, c13) + c23 * J2(c11, c33, c13)
    assert_identity(I3_EXPR, rhs, 3)


def test_I4_factorises_for_independent_pairs() -> None:
    """With c13 = c14 = c23 = c24 = 0, (z1, z2) and (z3, z4) are independent:
    I4 = J2(c11, c22, c12) I2(c33, c44, c34)."""
    lhs = I4_EXPR.subs({c13: 0, c14: 0, c23: 0, c24: 0})
    assert_identity(lhs, J2(c11, c22, c12) * I2(c33, c44, c34), 4)


def test_price_theorem_I4() -> None:
    """dI4/dc34 = E[g'(z1) g'(z2) g'(z3) g'(z4)] = (2/pi)^2 det(I + C)^(-1/2), the Gaussian
    integral of exp(-|z|^2 / 2) written directly (not by the derivation's tilting route)."""
    C = derive.covariance(4)
    assert_identity(sp.diff(I4_EXPR, c34), (2 / sp.pi) ** 2 / sp.sqrt((sp.eye(4) + C).det()), 4)


def test_I4_symmetries() -> None:
    """I4 is symmetric under z1 <-> z2 and under z3 <-> z4 (the tilting treats them alike)."""
    swap12 = {c11: c22, c22: c11, c13: c23, c23: c13, c14: c24, c24: c14}
    swap34 = {c33: c44, c44: c33, c13: c14, c14: c13, c23: c24, c24: c23}
    for swap in (swap12, swap34):
        assert_identity(I4_EXPR.subs(swap, simultaneous=True), I4_EXPR, 4)


# --- the generated numba kernels against the sympy expressions -----------------------------------

# Double-precision kernels against 60-digit evaluation of the same expressions: the closed forms
# have no cancellation (every square root is of a quantity bounded away from zero relative to its
# terms for a PSD covariance), so the rounding error is a few ulp per operation over ~30
# operations; measured <= 6e-16 relative. KERNEL_RTOL = 1e-13 is ~450 ulp.
KERNEL_RTOL = 1e-13


@cache
def _reference_expressions() -> dict[str, sp.Expr]:
    """Every kernel's expression; dI2_dc11 and dI2_dc22 taken as sympy.diff of the derived I2."""
    refs = {name: expr for name, expr, _, _ in derive.kernel_specs()}
    refs["dI2_dc11"] = sp.diff(I2_EXPR, c11)
    refs["dI2_dc22"] = sp.diff(I2_EXPR, c22)
    refs["dI2_dc12"] = J2_EXPR  # Price's theorem, checked symbolically above
    return refs


@pytest.mark.parametrize("name", ["J2", "I2", "dI2_dc11", "dI2_dc22", "dI2_dc12", "I3", "I4"])
def test_kernel_matches_expression(name: str) -> None:
    """The numba kernel equals its sympy expression at the rational points (as doubles)."""
    expr = _reference_expressions()[name]
    kernel = getattr(erf_kernels, name)
    n = {"I3": 3, "I4": 4}.get(name, 2)
    for point in rational_covariances(n):
        args = [float(point[s]) for s in SYMBOLS[n]]
        exact = {s: sp.Rational(a) for s, a in zip(SYMBOLS[n], args, strict=True)}
        reference = float(expr.evalf(DIGITS, subs=exact))
        value = kernel(*args)
        assert abs(value - reference) <= KERNEL_RTOL * abs(reference), (name, args, value)
