"""PyTorch baselines for the spectrum: torch double-backward HVPs and PyHessian's eigenvalues, trace and density.

PyHessian (Yao et al. 2020, ``pyhessian==0.1``) in its single-batch mode:
one graph of the gradient is built (``create_graph=True``) and every
Hessian-vector product differentiates it again. Its ``eigenvalues`` is power
iteration with deflation (``maxIter=100, tol=1e-3``: the relative change of the
eigenvalue iterate), ``trace`` is Hutchinson with Rademacher probes, ``density``
is SLQ. It does not report its products; :class:`CountedHVPs` counts them.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch


def flat(tensors) -> np.ndarray:
    """Tensors concatenated into one float vector."""
    return np.concatenate([t.detach().numpy().ravel() for t in tensors])


def math_attention():
    """The math attention kernel: torch's fused CPU attention has no double backward."""
    return torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH)


def torch_hvp(net, layout, x, y, v, timeit, repeats: int) -> tuple[dict, np.ndarray]:
    """Timing and the product (flattened, twin order) of torch's double-backward HVP of the mean cross-entropy."""
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
    params = list(net.parameters())
    vt = layout(v)

    def run():
        with math_attention():
            loss = torch.nn.functional.cross_entropy(net(xt), yt)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((g * t).sum() for g, t in zip(grads, vt))
            return torch.autograd.grad(dot, params)

    out = run()
    return timeit(run, repeats=repeats, warmup=0), flat(out)


class TorchEig:
    """``torch.eig`` for PyHessian 0.1's density (removed from torch in 1.9): its symmetric tridiagonal via ``eigh``.

    Returns the old format, eigenvalues as (n, 2) real and imaginary parts and
    the eigenvectors as columns; the work is on a ``steps x steps`` matrix.
    """

    def __enter__(self):
        def eig(T, eigenvectors=True):
            L, V = torch.linalg.eigh(T)
            return torch.stack([L, torch.zeros_like(L)], 1), V

        self.old = getattr(torch, "eig", None)
        torch.eig = eig
        return self

    def __exit__(self, *exc):
        if self.old is None:
            del torch.eig
        else:
            torch.eig = self.old


class CountedHVPs:
    """PyHessian's ``hessian_vector_product`` wrapped to count its calls."""

    def __init__(self):
        import pyhessian.hessian  # noqa: F401  (the package re-exports the class under the module's name)

        self.module = sys.modules["pyhessian.hessian"]
        self.inner, self.calls = self.module.hessian_vector_product, 0

    def __enter__(self):
        def counted(*a, **k):
            self.calls += 1
            return self.inner(*a, **k)

        self.module.hessian_vector_product = counted
        return self

    def __exit__(self, *exc):
        self.module.hessian_vector_product = self.inner


def pyhessian_spectrum(net, x, y, *, d: int, trace_products: int, probes: int, steps: int, seed: int = 0) -> dict:
    """PyHessian's top-d eigenpairs, trace (``trace_products`` products) and density (``probes x steps``), timed.

    The eigenpairs' relative residuals ``||H v - lambda v|| / |lambda|`` come
    from further torch HVPs (not timed, not counted).
    """
    from pyhessian import hessian
    from pyhessian.utils import hessian_vector_product

    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()
    torch.manual_seed(seed)
    out = {}
    with math_attention():
        ph = hessian(net, torch.nn.CrossEntropyLoss(), data=(xt, yt), cuda=False)
        with CountedHVPs() as count:
            t = time.perf_counter()
            evals, evecs = ph.eigenvalues(top_n=d)  # its defaults: maxIter=100, tol=1e-3
            wall = time.perf_counter() - t
        resid = [float(np.linalg.norm(flat(hessian_vector_product(ph.gradsH, ph.params, v)) - lam * flat(v)) / abs(lam))
                 for lam, v in zip(evals, evecs)]
        out["eigenpairs"] = {"wall_s": wall, "num_matvecs": count.calls, "max_relative_residual": max(resid),
                             "eigenvalues": [float(e) for e in evals], "settings": "maxIter=100, tol=1e-3"}
        t = time.perf_counter()
        vals = ph.trace(maxIter=trace_products, tol=-1.0)  # tol < 0: never stops early, exactly trace_products products
        out["trace"] = {"wall_s": time.perf_counter() - t, "products": len(vals), "trace": float(np.mean(vals)),
                        "stderr": float(np.std(vals, ddof=1) / np.sqrt(len(vals)))}
        with TorchEig():
            t = time.perf_counter()
            ph.density(iter=steps, n_v=probes)
            out["density"] = {"wall_s": time.perf_counter() - t, "products": probes * steps}
    net.zero_grad(set_to_none=True)  # PyHessian leaves gradients with a graph behind
    return out
