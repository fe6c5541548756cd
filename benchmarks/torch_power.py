"""PyTorch CPU baseline: the paper's deflated power iteration with double-backward HVPs.

Written from the description in ``docs/reference.md`` (the original code is not in
this repository): for each of the top-d eigenvectors, start from a random unit
vector, repeat ``v <- (H - sum_j lambda_j v_j v_j^T) v / ||.||`` (Hotelling
deflation of the pairs already found) for at most 1000 iterations, stopping
when the eigenvalue iterate changes by less than ``tol = 1e-6`` relative
(``|lambda_new - lambda_old| / (|lambda_old| + 1e-6) < tol``, the PyHessian
rule). Each ``H v`` is a double-backward pass through the full-data loss
(``torch.autograd.grad`` with ``create_graph=True``, then a second ``grad``).
Unlike the original, the eigenvalue is the signed Rayleigh quotient ``v.Hv``
(the original reported ``||Hv||``): this changes no timing.

The JAX flat weights are loaded into an equivalent ``nn.Sequential`` (JAX
kernels are (in, out); torch ``Linear.weight`` is (out, in)).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .torch_models import flat_to_torch_order, torch_mlp, torch_to_flat  # noqa: F401


class TorchHessian:
    """Full-data cross-entropy Hessian-vector products by double backward."""

    def __init__(self, net: nn.Sequential, x, y):
        self.net = net
        self.params = [p for p in net.parameters()]
        self.x = torch.from_numpy(np.asarray(x, np.float32))
        self.y = torch.from_numpy(np.asarray(y, np.int64))
        self.count = 0

    def hvp(self, vs: list[torch.Tensor]) -> list[torch.Tensor]:
        self.count += 1
        loss = nn.functional.cross_entropy(self.net(self.x), self.y)
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        return list(torch.autograd.grad(grads, self.params, grad_outputs=vs))


def _dot(a, b):
    return sum(torch.sum(x * y) for x, y in zip(a, b))


def _normalize(v):
    n = torch.sqrt(_dot(v, v))
    return [x / n for x in v]


def deflated_power(H: TorchHessian, d: int = 10, max_iter: int = 1000, tol: float = 1e-6, seed: int = 0, log=None):
    """Top-d eigenpairs, the paper's way. Returns (eigenvalues, eigenvectors as torch lists, iterations)."""
    gen = torch.Generator().manual_seed(seed)
    eigvals, eigvecs, iters = [], [], []
    for i in range(d):
        v = _normalize([torch.randn(p.shape, generator=gen) for p in H.params])
        lam = None
        for it in range(max_iter):
            Hv = H.hvp(v)
            for lj, vj in zip(eigvals, eigvecs):  # Hotelling deflation
                c = lj * _dot(vj, v)
                Hv = [h - c * u for h, u in zip(Hv, vj)]
            new_lam = float(_dot(v, Hv))
            v = _normalize(Hv)
            if lam is not None and abs(new_lam - lam) / (abs(lam) + 1e-6) < tol:
                lam = new_lam
                break
            lam = new_lam
        eigvals.append(lam)
        eigvecs.append([t.detach() for t in v])
        iters.append(it + 1)
        if log:
            log(f"  torch pair {i}: lambda={lam:.6g} after {it + 1} HVPs")
    return eigvals, eigvecs, iters


def run(model, w, x, y, d: int = 10, max_iter: int = 1000, tol: float = 1e-6, threads: int | None = None, log=print):
    """Time the baseline; returns a dict with eigenvalues, flat eigenvectors, time and HVP count."""
    if threads:
        torch.set_num_threads(threads)
    net = torch_mlp(model, w)
    H = TorchHessian(net, x, y)
    t = time.perf_counter()
    vals, vecs, iters = deflated_power(H, d, max_iter, tol, log=log)
    wall = time.perf_counter() - t
    flat = np.stack([torch_to_flat(model, v) for v in vecs])
    return {
        "eigenvalues": vals,
        "eigenvectors": flat,
        "wall_s": wall,
        "num_hvps": H.count,
        "iterations_per_pair": iters,
        "ms_per_hvp": 1e3 * wall / H.count,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
