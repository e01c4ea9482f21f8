"""Symbolic derivation of the Gaussian integrals with ReLU fields: g(z) = max(0, z) and its pairs
with erf and the linear activation. Its engine ``expectation`` is the one of every integral with
linear or ReLU fields (``derive_linear`` calls it too).

ReLU is g(z) = z Theta(z), with g' = Theta (g'(0) = 0, as autograd frameworks take it) and
g'' = delta. Every integral the ODEs need (docs/model.md §6) is the expectation, for z ~ N(0, C),
of a product of factors of the fields: z_i, Theta(z_i), delta(z_i), erf's g(z_i) and
g'(z_i) = sqrt(2 / pi) exp(-z_i^2 / 2), several on one field when fields coincide (``merged``).
``expectation`` reaches it by exact rules in a fixed order:

1. **Conditioning** removes a delta(z_i): E[delta(z_i) f(z)] = (2 pi C_ii)^(-1/2) E'[f(z)|z_i = 0],
   under E' the Schur complement C' = C - C_:i C_i: / C_ii (still centred); the other factors of
   field i take their value at 0 (z and erf's g vanish, g'(0) = sqrt(2 / pi)).
2. **Tilting** removes every erf g' (``theory.derive.tilt``, with a weight for a power of g').
3. **Stein's lemma** removes a factor z_i: E[z_i f(z)] = sum_j C_ij E[df / dz_j], with
   d z = 1, d Theta = delta, d g = g', d g' = -z g'.
4. What is left are Theta's and erf g's. Theta = (1 + sign) / 2, and erf(z / sqrt 2) =
   E_xi[sign(z + xi)], xi ~ N(0, 1) independent: a product of signs of centred Gaussians u (an erf
   field adds 1 to its variance). Its expectation is 1 for none, 0 for an odd number, the arcsine
   (2 / pi) asin(rho) for two, and for four the orthant integral ``sign4`` = E[s1 s2 s3 s4], which
   is not elementary: ``metaode.theory.activations.orthant`` computes it by a one-dimensional
   quadrature of elementary functions.

So every ReLU integral is elementary except through ``sign4``; nothing is typed in by hand. For
two ReLU fields, I2 is the arc-cosine kernel (2 pi)^-1 [sqrt(c11 c22 - c12^2) + c12 (pi - acos
rho)]. The partials of I2 come from Price's theorem (dI2/dc12 = E[f' h'], dI2/dc11 =
E[f'' h] / 2), which keeps them finite where a field is repeated (c11 c22 = c12^2).

Where fields coincide (I4(k, k, a, b), a student field a = k, a repeated teacher field), the
product on the common field must be formed before rule 1 (Theta Theta = Theta, z Theta Theta =
z Theta: delta(z) Theta(z) has no meaning): ``I4`` kernels are derived for every partition of the
four fields into equal ones (``PARTITIONS``), and the module's ``I4_forms`` calls the one of the
indices it is given; so are the four-point moments F4 of the few-shot theory and the off-diagonal
of their gradient (``integral_F4``, ``integral_F4_pairs``).
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter

import sympy as sp

from metaode.theory.derive import (
    PI,
    SQRT_2_OVER_PI,
    _args,
    _function_source,
    covariance,
    generated_header,
)

ERF, LINEAR, RELU = "e", "l", "r"
#: Factor kinds: z, Theta, delta, erf's g and g', and sign (rule 4 only).
Z, TH, DL, G, GP, SG = "z", "th", "dl", "g", "gp", "sg"

Factor = tuple[str, int]


class sign4(sp.Function):  # noqa: N801  (the kernel's name in the generated code)
    """E[sign(u1) sign(u2) sign(u3) sign(u4)] for u ~ N(0, C), as a function of the ten entries
    (c11, .., c44, c12, c13, c14, c23, c24, c34); printed as a call of the compiled kernel."""

    nargs = 10

    def _pythoncode(self, printer) -> str:
        return f"sign4({', '.join(printer._print(a) for a in self.args)})"


def _entries(C: sp.Matrix, idx: list[int]) -> list[sp.Expr]:
    """The kernel arguments (diagonal, then upper triangle row-major) of C on ``idx``."""
    return ([C[i, i] for i in idx]
            + [C[idx[p], idx[q]] for p in range(len(idx)) for q in range(p + 1, len(idx))])


@functools.cache
def _condition(C: sp.ImmutableMatrix, i: int) -> sp.ImmutableMatrix:
    """Covariance given z_i = 0: C - C_:i C_i: / C_ii (row and column i become 0)."""
    return sp.ImmutableMatrix((C - C[:, i] * C[i, :] / C[i, i]).applyfunc(sp.cancel))


@functools.cache
def _tilt(C: sp.ImmutableMatrix, weights: tuple[tuple[int, int], ...]
          ) -> tuple[sp.Expr, sp.ImmutableMatrix]:
    """Tilting by exp(-1/2 sum_i q_i z_i^2), q = dict(weights): (det(I + P C_SS)^(-1/2), C')
    with P = diag(q) and C' = C - C_:S (P^-1 + C_SS)^-1 C_S:."""
    weights = dict(weights)
    S = sorted(weights)
    P = sp.diag(*[weights[i] for i in S])
    C_SS = C.extract(S, S)
    C_xS = C.extract(list(range(C.rows)), S)
    Cp = C - C_xS * (P.inv() + C_SS).inv() * C_xS.T
    return (1 / sp.sqrt((sp.eye(len(S)) + P * C_SS).det()),
            sp.ImmutableMatrix(Cp.applyfunc(sp.cancel)))


def _derivative(kind: str, i: int) -> list[tuple[sp.Expr, tuple[Factor, ...]]]:
    """d/dz_i of one factor as (coefficient, factors) terms."""
    if kind == Z:
        return [(sp.Integer(1), ())]
    if kind == TH:
        return [(sp.Integer(1), ((DL, i),))]
    if kind == G:
        return [(sp.Integer(1), ((GP, i),))]
    if kind == GP:
        return [(sp.Integer(-1), ((Z, i), (GP, i)))]
    raise ValueError(f"no derivative of a factor {kind!r} under Stein's lemma")


def expectation(C: sp.Matrix, factors: tuple[Factor, ...]) -> sp.Expr:
    """E[prod of factors] for z ~ N(0, C) (module docstring, rules 1 to 4)."""
    return _expectation(sp.ImmutableMatrix(C), tuple(sorted(factors)))


@functools.cache
def _expectation(C: sp.ImmutableMatrix, factors: tuple[Factor, ...]) -> sp.Expr:
    """``expectation`` of sorted factors, memoised: the subproblems (a conditioned or tilted
    covariance with what is left of the product) recur across the kernels."""
    deltas = [f for f in factors if f[0] == DL]
    if deltas:
        i = deltas[0][1]
        rest = list(factors)
        rest.remove(deltas[0])
        coefficient = 1 / sp.sqrt(2 * PI * C[i, i])
        for kind, _ in [f for f in rest if f[1] == i]:
            if kind in (Z, G):
                return sp.Integer(0)
            if kind != GP:
                raise ValueError(f"delta(z) times {kind!r} of the same field has no meaning")
            coefficient *= SQRT_2_OVER_PI
        rest = tuple(f for f in rest if f[1] != i)
        return coefficient * expectation(_condition(C, i), rest)
    tilted = Counter(i for kind, i in factors if kind == GP)
    if tilted:
        norm, Cp = _tilt(C, tuple(sorted(tilted.items())))
        rest = tuple(f for f in factors if f[0] != GP)
        return SQRT_2_OVER_PI ** sum(tilted.values()) * norm * expectation(Cp, rest)
    linear = [f for f in factors if f[0] == Z]
    if linear:
        i = linear[0][1]
        rest = list(factors)
        rest.remove(linear[0])
        total = sp.Integer(0)
        for pos, (kind, j) in enumerate(rest):
            if C[i, j] == 0:
                continue
            others = tuple(rest[:pos] + rest[pos + 1:])
            for coefficient, new in _derivative(kind, j):
                total += C[i, j] * coefficient * expectation(C, others + new)
        return total
    return _signs(C, factors)


def _signs(C: sp.Matrix, factors: tuple[Factor, ...]) -> sp.Expr:
    """Rule 4: a product of Theta's and erf g's, as signs of centred Gaussians u."""
    thetas = [f for f in factors if f[0] == TH]
    if thetas:
        rest = list(factors)
        rest.remove(thetas[0])
        rest = tuple(rest)
        return (_signs(C, rest) + _signs(C, rest + ((SG, thetas[0][1]),))) / 2
    signs = Counter(i for kind, i in factors if kind == SG)
    variables = [(i, C[i, i] + 1) for kind, i in factors if kind == G]
    variables += [(i, C[i, i]) for i, count in signs.items() if count % 2]  # sign^2 = 1
    if len(variables) % 2:
        return sp.Integer(0)
    if not variables:
        return sp.Integer(1)
    if len(variables) == 2:
        (i, vi), (j, vj) = variables
        return 2 / PI * sp.asin(C[i, j] / sp.sqrt(vi * vj))
    if len(variables) == 4:
        diag = [v for _, v in variables]
        off = [C[variables[p][0], variables[q][0]] for p in range(4) for q in range(p + 1, 4)]
        return sign4(*diag, *off)
    raise NotImplementedError("a product of more than four signs")


def _clean(expr: sp.Expr) -> sp.Expr:
    """sqrt(a / b) split and powers of one base combined (v / sqrt(v) = sqrt(v)), and |x| = x:
    valid because every base of a power here, and so every x of sqrt(x^2) = |x|, is a variance,
    a Schur complement or a determinant of a covariance (>= 0). A conditional variance that
    vanishes where fields coincide then gives 0, not 0 / 0 (or |0| / 0)."""
    expr = sp.powsimp(sp.expand_power_base(expr, force=True), force=True)
    return expr.replace(sp.Abs, lambda x: x)


def value(kind: str, i: int) -> tuple[Factor, ...]:
    """The factors of g(z_i) for an activation kind."""
    return {ERF: ((G, i),), LINEAR: ((Z, i),), RELU: ((Z, i), (TH, i))}[kind]


def slope(kind: str, i: int) -> tuple[Factor, ...]:
    """The factors of g'(z_i) (none for the linear activation's 1)."""
    return {ERF: ((GP, i),), LINEAR: (), RELU: ((TH, i),)}[kind]


def curvature(kind: str, i: int) -> list[tuple[sp.Expr, tuple[Factor, ...]]]:
    """g''(z_i) as (coefficient, factors) terms (none for the linear activation)."""
    return {ERF: [(sp.Integer(-1), ((Z, i), (GP, i)))], LINEAR: [],
            RELU: [(sp.Integer(1), ((DL, i),))]}[kind]


def merged(factors: tuple[Factor, ...]) -> tuple[Factor, ...]:
    """The product on each field in its simplest form: Theta^n = Theta (a field's Theta's are the
    same indicator), which is what makes delta-conditioning meaningful on a repeated field."""
    out, seen = [], set()
    for f in factors:
        if f[0] == TH:
            if f in seen:
                continue
            seen.add(f)
        out.append(f)
    return tuple(out)


def integral_I2(f: str, h: str) -> sp.Expr:
    """I2 = E[f(z1) h(z2)]."""
    return sp.simplify(_clean(expectation(covariance(2), value(f, 0) + value(h, 1))))


def integral_dI2(f: str, h: str) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """(dI2/dc11, dI2/dc22, dI2/dc12) by Price's theorem: E[f'' h] / 2, E[f h''] / 2, E[f' h']."""
    C = covariance(2)

    def half_second(kind: str, i: int, other: tuple[Factor, ...]) -> sp.Expr:
        return sum((c * expectation(C, new + other) for c, new in curvature(kind, i)),
                   sp.Integer(0)) / 2

    return (sp.simplify(_clean(half_second(f, 0, value(h, 1)))),
            sp.simplify(_clean(half_second(h, 1, value(f, 0)))),
            sp.simplify(_clean(expectation(C, slope(f, 0) + slope(h, 1)))))


def integral_J2(s: str) -> sp.Expr:
    """J2 = E[s'(z1) s'(z2)]."""
    return sp.simplify(_clean(expectation(covariance(2), slope(s, 0) + slope(s, 1))))


#: Every partition of the fields (1, 2, 3, 4) of I4 into equal ones, as the label of each field
#: (the position of the first field equal to it): "0123" all distinct, "0023" z1 = z2, ...
PARTITIONS = tuple(sorted({
    "".join(str(labels.index(x)) for x in labels)
    for labels in itertools.product(range(4), repeat=4)
}))


def integral_I4(s: str, f: str, h: str, partition: str) -> sp.Expr:
    """I4 = E[s'(z1) s'(z2) f(z3) h(z4)] with the fields equal as ``partition`` says (each
    factor on the field of its label; the kernel reads the covariance entries of the first field
    of each label)."""
    fields = [int(x) for x in partition]
    factors = (slope(s, fields[0]) + slope(s, fields[1]) + value(f, fields[2])
               + value(h, fields[3]))
    return _clean(expectation(covariance(4), merged(factors)))


#: The pairs (p, q) of the four positions, in the order of the kernel arguments c12 .. c34.
POSITION_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def integral_F4(kinds: str, partition: str) -> sp.Expr:
    """F4 = E[f1(z1) f2(z2) f3(z3) f4(z4)], the activations of ``kinds``, the fields equal as
    ``partition`` says (as ``integral_I4``)."""
    fields = [int(x) for x in partition]
    factors = sum((value(k, f) for k, f in zip(kinds, fields, strict=True)), ())
    return _clean(expectation(covariance(4), merged(factors)))


def integral_F4_pairs(kinds: str, partition: str) -> tuple[sp.Expr, ...]:
    """The derivatives of F4 along the symmetric pairs (p, q) of ``POSITION_PAIRS``, by Price's
    theorem E[f_p'(z_p) f_q'(z_q) f_r(z_r) f_s(z_s)]: the off-diagonal of ``F4_gradient``, exact
    also where fields coincide (the derivative of F4 as a function of the 4 x 4 covariance). The
    diagonal follows from these and F4 (``relu.four_point_gradient``)."""
    fields = [int(x) for x in partition]
    out = []
    for p, q in POSITION_PAIRS:
        factors = ()
        for i in range(4):
            part = slope if i in (p, q) else value
            factors += part(kinds[i], fields[i])
        out.append(_clean(expectation(covariance(4), merged(factors))))
    return tuple(out)


def allowed(kinds: str, roles: str, partition: str) -> bool:
    """Whether fields equal by ``partition`` are possible: only fields of one role (student "s",
    teacher "t") can be the same field, and then their kinds agree."""
    return all(roles[int(x)] == roles[i] and kinds[int(x)] == kinds[i]
               for i, x in enumerate(partition))


#: The I4 words (kinds of the fields k, l, a, b) of each (student, teacher) pair with a ReLU
#: member, with the roles of the fields (student s, teacher t): a <= b, a student field first.
def I4_words(student: str, teacher: str) -> list[tuple[str, str]]:
    """(kinds, roles) of the I4 slices of the pair: (s s s s), (s s s t), (s s t t)."""
    return [(student * 4, "ssss"), (student * 3 + teacher, "ssst"),
            (student * 2 + teacher * 2, "sstt")]


#: (student, teacher) pairs with a ReLU member.
PAIRS = (("r", "r"), ("r", "e"), ("e", "r"), ("r", "l"), ("l", "r"))


def I4_kernels() -> dict[str, list[str]]:
    """{kinds: partitions}: the I4 kernels of every word of ``I4_words`` that has a ReLU field
    (the erf-only and linear-only words are their own modules')."""
    out: dict[str, set[str]] = {}
    for student, teacher in PAIRS:
        for kinds, roles in I4_words(student, teacher):
            if RELU not in kinds:
                continue
            out.setdefault(kinds, set()).update(
                p for p in PARTITIONS if allowed(kinds, roles, p))
    return {kinds: sorted(parts) for kinds, parts in sorted(out.items())}


def partition_code(partition: str) -> int:
    """The integer a compiled caller computes from the labels: sum_i label_i 4^(3 - i)."""
    return sum(int(x) * 4 ** (3 - i) for i, x in enumerate(partition))


def kernel_specs() -> list[tuple[str, sp.Expr | tuple[sp.Expr, ...], list[sp.Symbol], str]]:
    """Every kernel of ``relu_kernels`` but the I4 dispatchers: (name, expression or tuple,
    arguments, docstring); names end in the activation kinds (e erf, l linear, r ReLU) and, for
    I4, the partition of the fields."""
    specs = []
    words = ["".join(w) for w in itertools.product("elr", repeat=2) if RELU in w]
    for fh in words:
        specs.append((f"I2_{fh}", integral_I2(*fh), _args(2),
                      f"I2 = E[f(z1) h(z2)], (f, h) = {fh}."))
        for name, expr in zip(("dI2_dc11", "dI2_dc22", "dI2_dc12"), integral_dI2(*fh),
                              strict=True):
            specs.append((f"{name}_{fh}", expr, _args(2),
                          f"d(I2_{fh})/d{name[-3:]} (Price's theorem)."))
    specs.append(("J2_r", integral_J2(RELU), _args(2),
                  "J2 = E[Theta(z1) Theta(z2)] = 1/4 + asin(rho) / (2 pi)."))
    for kinds, partitions in I4_kernels().items():
        for partition in partitions:
            specs.append((f"I4_{kinds}_{partition}", integral_I4(kinds[0], *kinds[2:], partition),
                          _args(4), f"I4 = E[s'(z1) s'(z2) f(z3) h(z4)], kinds {kinds}, fields "
                          f"equal as {partition} (labels)."))
            specs.append((f"F4_{kinds}_{partition}", integral_F4(kinds, partition), _args(4),
                          f"F4 = E[f1(z1) f2(z2) f3(z3) f4(z4)], kinds {kinds}, fields equal as "
                          f"{partition} (labels)."))
            specs.append((f"F4_pairs_{kinds}_{partition}", integral_F4_pairs(kinds, partition),
                          _args(4), f"dF4 along the pairs 12, 13, 14, 23, 24, 34 (Price's "
                          f"theorem), kinds {kinds}, fields equal as {partition} (labels)."))
    return specs


def _dispatcher(name: str, kinds: str, partitions: list[str]) -> str:
    """numba source of <name>_<kinds>(code, c11, ..): the kernel of the partition with that
    ``partition_code``."""
    args = ", ".join(str(a) for a in _args(4))
    lines = ["@njit(cache=True)", f"def {name}_{kinds}(code, {args}):",
             f'    """{name} of kinds {kinds} for the partition of the fields with ``code``."""']
    for partition in partitions:
        lines.append(f"    if code == {partition_code(partition)}:")
        lines.append(f"        return {name}_{kinds}_{partition}({args})")
    lines.append('    raise ValueError("no kernel of this partition of the fields")')
    return "\n".join(lines)


HEADER = generated_header(
    "Gaussian integrals with ReLU fields (g(z) = max(0, z) and its pairs with erf and\nthe linear "
    "activation) as numba kernels. Names end in the activation kinds of the fields\n(e = erf, "
    "l = linear, r = ReLU) and, for I4, the partition of its fields into equal ones.",
    "theory/derive_relu.py")


SQRT_PRELUDE = '''

@njit(cache=True)
def _sqrt(x):
    """sqrt with the argument clipped at 0: the bases are variances, Schur complements and
    determinants of a covariance, which rounding can push below 0 where fields coincide."""
    return math.sqrt(max(0.0, x))'''


def generated_source() -> str:
    """The full text of theory/activations/relu_kernels.py."""
    header = HEADER.replace("from numba import njit\n", "from numba import njit\n\n"
                            "from metaode.theory.activations.orthant import sign4\n")
    blocks = [header.rstrip() + "\n" + SQRT_PRELUDE]
    for name, expr, args, doc in kernel_specs():
        source = _function_source(name, expr, args, doc).replace("math.sqrt(", "_sqrt(")
        if name[:3] in ("I4_", "F4_"):  # 0 / 0 at (nearly) collinear fields: NaN, not an error
            source = source.replace("@njit(cache=True)", '@njit(cache=True, error_model="numpy")')
        blocks.append(source)
    for kinds, partitions in I4_kernels().items():
        for name in ("I4", "F4", "F4_pairs"):
            blocks.append(_dispatcher(name, kinds, partitions))
    return "\n\n\n".join(blocks) + "\n"
