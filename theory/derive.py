"""Symbolic derivation of the Gaussian integrals of the erf activation.

For g(z) = erf(z / sqrt(2)) we have g'(z) = sqrt(2 / pi) exp(-z^2 / 2), so every integral the ODEs
need is a Gaussian integral of exponentials, reached by three exact rules:

* **Gaussian tilting.** For z ~ N(0, C) and a set S of coordinates,
  ``E[exp(-1/2 sum_{i in S} z_i^2) f(z)] = det(I + C_SS)^(-1/2) E'[f(z)]`` where under E' the vector
  z is N(0, C') with ``C' = C - C_{:,S} (I + C_SS)^(-1) C_{S,:}`` (Woodbury on C^-1 + P_S).
* **Stein's lemma.** ``E[z_i f(z)] = sum_j C_ij E[d f / d z_j]``.
* **Price's theorem.** ``d E[f(z_1) h(z_2)] / d C_12 = E[f'(z_1) h'(z_2)]``.

From them (nothing typed in by hand):

* J2 = E[g'(a) g'(b)]: tilting on (a, b) of a constant.
* I2 = E[g(a) g(b)]: Price's theorem, I2 = int_0^c J2 dc' (I2 = 0 at c = 0 because g is odd).
* I3 = E[g'(a) b g(c)]: tilting on a, then Stein's lemma on b, then tilting on c.
* I4 = E[g'(a) g'(b) g(c) g(d)]: tilting on (a, b), then I2 under the tilted covariance.
* Gradients of J2, I3, I4 with respect to all their covariance entries (``sympy.diff`` of the
  derived expressions), for the exact Jacobian of the ODEs (``theory.jacobian``): one kernel per
  integral returning the tuple of partial derivatives in argument order.

``python -m metaode.theory.derive`` writes the numba kernels to
``theory/activations/erf_kernels.py`` (those with linear fields, ``theory.derive_linear``, to
``theory/activations/linear_kernels.py``, and those with ReLU fields, ``theory.derive_relu``, to
``theory/activations/relu_kernels.py``);
``tests/test_derivation.py`` re-derives them and checks that the committed file is current.
"""

from __future__ import annotations

import sympy as sp

PI = sp.pi
SQRT_2_OVER_PI = sp.sqrt(2 / PI)


def covariance(n: int) -> sp.Matrix:
    """Symmetric n x n covariance of symbols c11, c12, ... (1-based, upper triangle)."""
    entries = {}
    for i in range(n):
        for j in range(i, n):
            entries[i, j] = entries[j, i] = sp.Symbol(f"c{i + 1}{j + 1}", real=True)
    return sp.Matrix(n, n, lambda i, j: entries[i, j])


def tilt(C: sp.Matrix, S: list[int]) -> tuple[sp.Expr, sp.Matrix]:
    """Gaussian tilting by exp(-1/2 sum_{i in S} z_i^2): returns (det(I + C_SS)^(-1/2), C')."""
    C_SS = C.extract(S, S)
    C_xS = C.extract(list(range(C.rows)), S)
    M = sp.eye(len(S)) + C_SS
    Cp = C - C_xS * M.inv() * C_xS.T
    return 1 / sp.sqrt(M.det()), Cp.applyfunc(sp.cancel)


def stein(C: sp.Matrix, i: int, f: sp.Expr, z: list[sp.Symbol]) -> sp.Expr:
    """Stein's lemma: E[z_i f(z)] = sum_j C_ij E[df/dz_j] (returned as the integrand)."""
    return sum(C[i, j] * sp.diff(f, z[j]) for j in range(len(z)))


def derive_J2() -> sp.Expr:
    """J2 = E[g'(z1) g'(z2)] = (2/pi) det(I + C)^(-1/2)."""
    C = covariance(2)
    norm, _ = tilt(C, [0, 1])
    return sp.simplify((2 / PI) * norm)


def derive_I2() -> sp.Expr:
    """I2 = E[g(z1) g(z2)] by Price's theorem: dI2/dc12 = J2, I2(c12 = 0) = 0."""
    C = covariance(2)
    c11, c22, c12 = C[0, 0], C[1, 1], C[0, 1]
    k = sp.Symbol("k", positive=True)  # (1 + c11)(1 + c22), positive for a covariance
    t = sp.Symbol("t", real=True)
    integrand = (derive_J2().subs(c12, t)).subs((1 + c11) * (1 + c22), k)
    integrand = sp.simplify(integrand.subs(sp.expand((1 + c11) * (1 + c22)), k))
    antiderivative = sp.integrate(integrand, (t, 0, c12))
    return sp.simplify(antiderivative.subs(k, (1 + c11) * (1 + c22)))


def _erf_prime(z: sp.Expr) -> sp.Expr:
    return SQRT_2_OVER_PI * sp.exp(-(z**2) / 2)


def derive_I3() -> sp.Expr:
    """I3 = E[g'(z1) z2 g(z3)]: tilt on z1, Stein on z2, tilt on z3 for the remaining E'[g'(z3)]."""
    C = covariance(3)
    norm1, C1 = tilt(C, [0])
    # Under E', Stein on z2 with f = g(z3) leaves C'_23 E'[g'(z3)].
    z = sp.symbols("z1:4", real=True)
    g3 = sp.Function("g")(z[2])
    stein_term = stein(C1, 1, g3, list(z)).subs(sp.Derivative(g3, z[2]), sp.Symbol("Egp3"))
    norm3, _ = tilt(C1, [2])
    E_gprime_3 = SQRT_2_OVER_PI * norm3  # E'[g'(z3)] = sqrt(2/pi) (1 + C'_33)^(-1/2)
    expr = SQRT_2_OVER_PI * norm1 * stein_term.subs(sp.Symbol("Egp3"), E_gprime_3)
    return sp.simplify(sp.factor(expr))


def derive_I4() -> sp.Expr:
    """I4 = E[g'(z1) g'(z2) g(z3) g(z4)]: tilt on (z1, z2), then I2 under the tilted covariance."""
    C = covariance(4)
    norm, Cp = tilt(C, [0, 1])
    I2 = derive_I2()
    c11, c22, c12 = sp.symbols("c11 c22 c12", real=True)
    inner = I2.subs({c11: Cp[2, 2], c22: Cp[3, 3], c12: Cp[2, 3]}, simultaneous=True)
    return (2 / PI) * norm * inner


def derive_I2_gradient() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(dI2/dc11, dI2/dc22, dI2/dc12), for the drift of meta-losses written in terms of I2."""
    C = covariance(2)
    I2 = derive_I2()
    return tuple(sp.simplify(sp.diff(I2, s)) for s in (C[0, 0], C[1, 1], C[0, 1]))


def derive_gradient(expr: sp.Expr, n: int) -> tuple[sp.Expr, ...]:
    """Partial derivatives of an integral of n fields with respect to its kernel arguments
    (diagonals c11..cnn, then c12, c13, ..., row-major). An off-diagonal symbol c_ij stands for
    both C_ij and C_ji, so d/dc_ij is the derivative along the symmetric perturbation."""
    return tuple(sp.diff(expr, s) for s in _args(n))


def _args(n: int) -> list[sp.Symbol]:
    C = covariance(n)
    diag = [C[i, i] for i in range(n)]
    off = [C[i, j] for i in range(n) for j in range(i + 1, n)]
    return diag + off


def _function_source(name: str, expr: sp.Expr | tuple[sp.Expr, ...], args: list[sp.Symbol],
                     doc: str) -> str:
    """numba source of one kernel, common subexpressions eliminated; a tuple of expressions
    (a gradient) becomes one kernel returning the tuple, sharing the subexpressions."""
    exprs = list(expr) if isinstance(expr, tuple) else [expr]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("t"), optimizations="basic")
    lines = [
        "@njit(cache=True)",
        f"def {name}({', '.join(str(a) for a in args)}):",
        f'    """{doc}"""',
    ]
    lines += [f"    {lhs} = {_code(rhs)}" for lhs, rhs in replacements]
    if isinstance(expr, tuple):
        lines.append("    return (")
        # Numbers are written as floats (``_code``): numba then sees a tuple of floats.
        lines += [f"        {_code(r)}," for r in reduced]
        lines.append("    )")
    else:
        lines.append(f"    return {_code(reduced[0])}")
    return "\n".join(lines)


def _code(expr: sp.Expr) -> str:
    """Python source of expr, arcsin arguments clipped to [-1, 1] against rounding (a field
    repeated in I4, as in the four-point moments, makes the exact argument +-1); a number is
    written as a float (numba then sees floats only, also in a tuple of partials)."""
    if expr.is_Number:
        return repr(float(expr))
    return sp.pycode(expr, fully_qualified_modules=True).replace("math.asin(", "_asin(")


KERNEL_PRELUDE = '''
import math

from numba import njit


@njit(cache=True)
def _asin(x):
    """arcsin with the argument clipped to [-1, 1] (rounding past +-1 at singular covariances)."""
    return math.asin(min(1.0, max(-1.0, x)))
'''


def generated_header(title: str, source: str) -> str:
    """The opening of a generated kernel file: its docstring (``title``, then where it comes
    from, ``source`` the deriving module's file) and the clipped arcsine its kernels call."""
    return (f'"""{title}\n\nGENERATED by ``python -m metaode.theory.derive`` from the sympy '
            f"derivation in ``{source}``;\ndo not edit by hand (``tests/test_derivation.py`` "
            "fails if this file is not current).\nArguments are covariance entries: diagonals "
            'first (c11, c22, ...), then c12, c13, ..., row-major.\n"""\n' + KERNEL_PRELUDE)


HEADER = generated_header(
    "Closed-form Gaussian integrals of g(z) = erf(z / sqrt(2)) as numba kernels.",
    "theory/derive.py")


def kernel_specs() -> list[tuple[str, sp.Expr | tuple[sp.Expr, ...], list[sp.Symbol], str]]:
    """Every kernel: (name, sympy expression or tuple of them, argument symbols, docstring)."""
    dI2 = derive_I2_gradient()
    J2, I3, I4 = derive_J2(), derive_I3(), derive_I4()
    return [
        ("J2", J2, _args(2), "J2 = E[g'(z1) g'(z2)], z ~ N(0, C)."),
        ("I2", derive_I2(), _args(2), "I2 = E[g(z1) g(z2)], z ~ N(0, C)."),
        ("dI2_dc11", dI2[0], _args(2), "dI2/dc11 at fixed c22, c12."),
        ("dI2_dc22", dI2[1], _args(2), "dI2/dc22 at fixed c11, c12."),
        ("dI2_dc12", dI2[2], _args(2), "dI2/dc12 at fixed c11, c22 (= J2, Price's theorem)."),
        ("I3", I3, _args(3), "I3 = E[g'(z1) z2 g(z3)], z ~ N(0, C)."),
        ("I4", I4, _args(4), "I4 = E[g'(z1) g'(z2) g(z3) g(z4)], z ~ N(0, C)."),
        ("J2_gradient", derive_gradient(J2, 2), _args(2),
         "(dJ2/dc11, dJ2/dc22, dJ2/dc12)."),
        ("I3_gradient", derive_gradient(I3, 3), _args(3),
         "(dI3/dc11, dI3/dc22, dI3/dc33, dI3/dc12, dI3/dc13, dI3/dc23)."),
        ("I4_gradient", derive_gradient(I4, 4), _args(4),
         "(dI4/dc11, ..., dI4/dc44, dI4/dc12, dI4/dc13, dI4/dc14, dI4/dc23, dI4/dc24, dI4/dc34)."),
    ]


def generated_source() -> str:
    """The full text of theory/activations/erf_kernels.py."""
    blocks = [HEADER.rstrip()]
    for name, expr, args, doc in kernel_specs():
        blocks.append(_function_source(name, expr, args, doc))
    return "\n\n\n".join(blocks) + "\n"


def main() -> None:
    """Write the erf kernels, those with linear fields (``theory.derive_linear``) and those with
    ReLU fields (``theory.derive_relu``)."""
    from pathlib import Path

    from metaode.theory import derive_linear, derive_relu

    folder = Path(__file__).parent / "activations"
    for name, source in (("erf_kernels.py", generated_source()),
                         ("linear_kernels.py", derive_linear.generated_source()),
                         ("relu_kernels.py", derive_relu.generated_source())):
        (folder / name).write_text(source)
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
