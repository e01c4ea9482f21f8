"""Fixed points of the ODEs dy/dalpha = f(y) and their linear stability.

``find_fixed_point`` solves f(y) = 0 by damped Newton with the Jacobian of ``theory.jacobian``
(exact for sgd, central differences of the exact right-hand side for anil and few-shot anil). The
search runs in an affine subspace y = y0 + V z with orthonormal columns V (n x d): the Newton step
solves the d x d system (V^T J V) dz = -V^T f in the least-squares sense (minimal norm, so that
zero modes of the Jacobian, directions along a manifold of fixed points, do not stall it), and is
halved until ||V^T f||_2 decreases by the Armijo factor (1 - 1e-4 t). V defaults to the
coordinates that evolve (``free_basis``: all of y, or Q and R only when the head is fixed,
lr_head = 0, since then w is a parameter, not a variable). With V = ``symmetric_basis`` the search
stays in the subspace invariant under permutations of the student units and of the teacher units
(Q_kk = q, Q_kl = c, R_km = r, w_k = v), where f(y) lies in span V, so V^T f = 0 is f = 0.

``stability`` returns the eigenvalues of V^T J V (the Jacobian on the evolving coordinates) sorted
by decreasing real part, unstable first, with eigenvectors V v in the full state space.

Named fixed points: ``symmetric_plateau`` (the unspecialised saddle where every student unit has
the same overlap with every teacher unit; its unstable eigenvalue sets the escape time, see
``solvers.plateau``) and ``specialised_fixed_point`` (the student copies the teacher, J_k = B_k:
Q = T, R = T, w = u0; exactly a fixed point without label noise).

A linear student has no isolated fixed points: its network depends on J only through w^T J
(any J -> A J, w -> A^-T w leaves it unchanged), so its fixed points form manifolds, and
``find_fixed_point`` and ``stability`` refuse it (``require_isolated``) instead of returning one
arbitrary point of a manifold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaode.theory.activations import activation
from metaode.theory.jacobian import jacobian
from metaode.theory.state import pack, state_size
from metaode.theory.system import ODESystem

#: Armijo sufficient-decrease constant and the smallest step fraction of the line search.
ARMIJO, MIN_STEP = 1e-4, 2.0**-30


@dataclass
class FixedPoint:
    """Result of ``find_fixed_point``: the state y, ||f(y)||_inf (``residual``), the number of
    Newton iterations, whether residual <= tol was reached, a message, and the right-hand-side and
    Jacobian evaluation counts."""

    y: np.ndarray
    residual: float
    iterations: int
    converged: bool
    message: str
    nfev: int
    njev: int


@dataclass
class Stability:
    """Eigen-decomposition of the Jacobian at a state: ``eigenvalues`` sorted by decreasing real
    part (unstable first), ``eigenvectors`` (columns, full state space, unit norm) in the same
    order; ``n_unstable`` / ``n_zero`` count eigenvalues with real part above / modulus within
    ``zero_tol`` times the largest modulus (zero modes: symmetries or conservation laws)."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    n_unstable: int
    n_zero: int

    @property
    def unstable(self) -> np.ndarray:
        """The eigenvalues with positive real part (beyond the zero modes)."""
        return self.eigenvalues[: self.n_unstable]


def free_basis(system: ODESystem) -> np.ndarray:
    """Unit vectors of the evolving coordinates of y: all, or Q and R if lr_head = 0."""
    n = state_size(system.K, system.M)
    keep = n if system.config.training.lr_head != 0 else n - system.K
    return np.eye(n)[:, :keep]


def symmetric_basis(K: int, M: int, head: bool = True) -> np.ndarray:
    """Orthonormal basis (columns) of the states invariant under permuting student units and
    teacher units: Q_kk = q, Q_kl = c (k != l), R_km = r, w_k = v (without the w column if
    ``head`` is False, i.e. the head is fixed)."""
    groups = [_symmetric_groups(K, M)[g] for g in ("diag", "off", "R", "w")
              if g != "w" or head]
    columns = [g / np.linalg.norm(g) for g in groups if g.any()]
    return np.array(columns).T


def symmetrise(y: np.ndarray, K: int, M: int) -> np.ndarray:
    """The orthogonal projection of y on the permutation-symmetric states: each group of
    ``symmetric_basis`` (diagonal Q, off-diagonal Q, R, w) replaced by its mean."""
    y = np.asarray(y, dtype=float)
    out = np.empty_like(y)
    for mask in _symmetric_groups(K, M).values():
        sel = mask.astype(bool)
        if sel.any():
            out[sel] = y[sel].mean()
    return out


def asymmetry(y: np.ndarray, K: int, M: int) -> float:
    """||y - symmetrise(y)||_2: the distance of y from the permutation-symmetric states."""
    return float(np.linalg.norm(np.asarray(y, dtype=float) - symmetrise(y, K, M)))


def _symmetric_groups(K: int, M: int) -> dict[str, np.ndarray]:
    """Indicator vectors (in y) of the diagonal of Q, the off-diagonal of Q, R and w."""
    ones = np.ones((K, K))
    return {"diag": pack(np.eye(K), np.zeros((K, M)), np.zeros(K)),
            "off": pack(ones - np.eye(K), np.zeros((K, M)), np.zeros(K)),
            "R": pack(np.zeros((K, K)), np.ones((K, M)), np.zeros(K)),
            "w": pack(np.zeros((K, K)), np.zeros((K, M)), np.ones(K))}


def require_isolated(system: ODESystem) -> None:
    """ValueError for a student whose units are not identifiable (the linear activation,
    ``Activation.identifiable``): its fixed points are not isolated (module docstring)."""
    name = system.config.student.activation
    if not activation(name).identifiable:
        raise ValueError(f"the fixed points of a {name} student form manifolds (its network "
                         "depends on J only through w^T J): there is no isolated fixed point "
                         "to find and no stability of one")


def find_fixed_point(system: ODESystem, y0: np.ndarray, *, basis: np.ndarray | None = None,
                     tol: float = 1e-14, max_iter: int = 50) -> FixedPoint:
    """Damped Newton for f(y) = 0 from y0 within y0 + span(basis) (module docstring); a linear
    student is refused (``require_isolated``).

    Stops when ||f(y)||_inf <= tol (converged), or after max_iter iterations, or when the line
    search cannot decrease ||V^T f||_2 any more (the message says which). ``tol`` is absolute:
    f is a sum of O(lr) terms, so its rounding floor is ~1e-16 lr (measured 1e-17 for sgd at
    lr = 0.1, 1e-16 for anil at lr = 1); a Monte Carlo right-hand side needs a larger tol.
    """
    require_isolated(system)
    V = free_basis(system) if basis is None else np.asarray(basis, dtype=float)
    y = np.array(y0, dtype=float)
    f = system.rhs(0.0, y)
    nfev, njev, message = 1, 0, f"no convergence in {max_iter} iterations"
    for iteration in range(max_iter + 1):
        if np.abs(f).max() <= tol:
            message = "converged"
            break
        if iteration == max_iter:
            break
        g = V.T @ f
        step = V @ np.linalg.lstsq(V.T @ jacobian(system, y) @ V, -g, rcond=None)[0]
        njev += 1
        t, norm = 1.0, np.linalg.norm(g)
        while t >= MIN_STEP:
            trial = y + t * step
            f_trial = system.rhs(0.0, trial)
            nfev += 1
            if np.all(np.isfinite(f_trial)) and (
                    np.linalg.norm(V.T @ f_trial) <= (1.0 - ARMIJO * t) * norm):
                break
            t /= 2.0
        else:
            message = f"line search failed at ||f|| = {np.abs(f).max():.3g}"
            break
        y, f = trial, f_trial
    residual = float(np.abs(f).max())
    return FixedPoint(y=y, residual=residual, iterations=iteration, converged=residual <= tol,
                      message=message, nfev=nfev, njev=njev)


def stability(system: ODESystem, y: np.ndarray, *, basis: np.ndarray | None = None,
              zero_tol: float = 1e-8) -> Stability:
    """Eigenvalues and eigenvectors of V^T J(y) V (V = ``free_basis`` by default), unstable first.

    ``zero_tol`` (relative to the largest |eigenvalue|) separates zero modes from stable and
    unstable ones; the exact sgd Jacobian resolves eigenvalues to ~1e-15 relative, the central
    differences of the other systems to ~1e-10. A linear student is refused
    (``require_isolated``).
    """
    require_isolated(system)
    V = free_basis(system) if basis is None else np.asarray(basis, dtype=float)
    values, vectors = np.linalg.eig(V.T @ jacobian(system, y) @ V)
    order = np.lexsort((-values.imag, -values.real))
    values, vectors = values[order], V @ vectors[:, order]
    vectors /= np.linalg.norm(vectors, axis=0)
    scale = zero_tol * np.abs(values).max()
    zero = np.abs(values) <= scale
    return Stability(eigenvalues=values, eigenvectors=vectors,
                     n_unstable=int(np.sum((values.real > 0) & ~zero)), n_zero=int(zero.sum()))


def _check_permutation_symmetric(system: ODESystem) -> None:
    """The symmetric subspace is invariant only if u0 has equal entries and T = a I + b 1 1^T."""
    T, M = system.T, system.M
    u0 = np.asarray(system.config.teacher.u0, dtype=float)
    off = T[~np.eye(M, dtype=bool)]
    if np.ptp(u0) > 0 or np.ptp(np.diag(T)) > 0 or (off.size and np.ptp(off) > 0):
        raise ValueError("the system is not symmetric under permutations of the teacher units "
                         "(u0 must have equal entries and T equal diagonal and off-diagonal)")


def symmetric_plateau(system: ODESystem, y_guess: np.ndarray, *, tol: float = 1e-14,
                      max_iter: int = 50) -> FixedPoint:
    """The symmetric fixed point (plateau): Newton in the permutation-symmetric subspace from
    ``symmetrise(y_guess)``, e.g. a trajectory state on the plateau (``solvers.plateau``: the
    state at the plateau centre). For a fixed head (lr_head = 0) w stays at its value, which must
    have equal entries. There may be several symmetric fixed points (the K = M = 3 soft committee
    machine at finite lr has two, tests/test_fixedpoints.py): the guess selects one."""
    _check_permutation_symmetric(system)
    head = system.config.training.lr_head != 0
    y0 = symmetrise(y_guess, system.K, system.M)
    if not head and np.ptp(np.asarray(y_guess, dtype=float)[-system.K:]) > 0:
        raise ValueError("a fixed head with unequal entries breaks the permutation symmetry")
    return find_fixed_point(system, y0, basis=symmetric_basis(system.K, system.M, head),
                            tol=tol, max_iter=max_iter)


def specialised_fixed_point(system: ODESystem, y_guess: np.ndarray | None = None, *,
                            tol: float = 1e-14, max_iter: int = 50) -> FixedPoint:
    """The specialised fixed point: Newton (``free_basis``) from y_guess, by default (K = M) from
    the student that copies the teacher, Q = T, R = T, w = u0 (w0 for a fixed head), which is an
    exact fixed point without label noise and the start of the search with it."""
    if y_guess is None:
        if system.K != system.M:
            raise ValueError("K != M: give y_guess (a specialised state, e.g. a trajectory end)")
        fixed = system.config.training.lr_head == 0
        w = system.config.student.w0 if fixed else system.config.teacher.u0
        y_guess = pack(system.T, system.T, np.asarray(w, dtype=float))
    return find_fixed_point(system, y_guess, tol=tol, max_iter=max_iter)

