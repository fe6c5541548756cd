"""PyTorch CPU baseline for the all-k Monte Carlo Delta_k: what the original code did, minus its bugs.

For each draw theta_t: deep-copy the model, perturb its parameters in place
along *all* d directions (``p += sum_j theta_tj P_j``; the original applied
only the first), run a ``DataLoader`` over the fixed data order (the
original reshuffled per pass) in batches of 64, and collect the batch
losses. ``Delta_k`` then follows from cumulative means of the batch losses,
exactly as in :mod:`jaxland.landscape.montecarlo`. Used by :mod:`benchmarks.delta`
(the MLP) and :mod:`benchmarks.architectures` (any torch module:
:func:`module_batch_losses`) with the same weights, data and draws as jaxland.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .torch_models import flat_to_torch_order, torch_mlp


def torch_directions(model, directions) -> list[list[torch.Tensor]]:
    """Per direction, tensors shaped like the torch module's parameters (in ``parameters()`` order)."""
    return [[torch.from_numpy(a) for a in flat_to_torch_order(model, p)] for p in np.asarray(directions)]


def batch_losses(model, w, directions, thetas, x, y, *, batch_size: int = 64, device=None) -> np.ndarray:
    """(T, K) batch losses ``L^batch_b(w* + theta_t @ P)`` of the MLP twin of ``model`` at the flat weights ``w``.

    ``device``: torch device of the model, directions and data (default CPU).
    """
    return module_batch_losses(torch_mlp(model, w), torch_directions(model, directions), thetas, x, y, batch_size=batch_size, device=device)


def module_batch_losses(net, directions, thetas, x, y, *, batch_size: int = 64, device=None) -> np.ndarray:
    """(T, K) batch losses of any torch module, one deep-copied, perturbed copy per draw.

    ``directions``: per direction j, tensors shaped like ``net.parameters()``
    (in that order); draw t perturbs every parameter by ``sum_j theta_tj P_j``
    along all d directions. The data order is fixed (no reshuffling) and the
    last incomplete batch is dropped, so batch b is samples ``b*bs .. (b+1)*bs - 1``
    for every draw, as in :mod:`jaxland.landscape.montecarlo`.
    """
    device = torch.device(device or "cpu")
    base = net.eval().to(device)
    dirs = [[torch.as_tensor(t).to(device) for t in ts] for ts in directions]
    xt = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(np.array(y, dtype=np.int64)).to(device)
    loader = DataLoader(
        TensorDataset(xt, yt),
        batch_size=batch_size,
        shuffle=False,  # the original reshuffled per pass; here every draw sees the same order
        drop_last=True,
    )
    thetas = np.asarray(thetas, dtype=np.float64)
    out = np.empty((thetas.shape[0], len(loader)), np.float64)
    loss_fn = nn.CrossEntropyLoss()
    for t, theta in enumerate(thetas):
        net_t = copy.deepcopy(base)
        with torch.no_grad():
            for j, tj in enumerate(theta):  # all d directions
                for p, dp in zip(net_t.parameters(), dirs[j]):
                    p.add_(dp, alpha=float(tj))
            for b, (xb, yb) in enumerate(loader):
                out[t, b] = loss_fn(net_t(xb), yb).item()
    return out


def delta_from_batch_losses(losses: np.ndarray):
    """``(k, Delta_k, stderr)`` for k = 1..K-1 from (T, K) batch losses (float64)."""
    losses = np.asarray(losses, np.float64)
    kk = np.arange(1, losses.shape[1] + 1)
    big_l = np.cumsum(losses, axis=1) / kk
    inc = (losses[:, 1:] - big_l[:, :-1]) / kk[1:]
    q = inc**2
    return kk[:-1], q.mean(0), q.std(0, ddof=1) / np.sqrt(q.shape[0])


def run(model, w, directions, thetas, x, y, *, batch_size: int = 64, threads: int | None = None, device=None) -> dict:
    """Time the MLP baseline; returns wall time, the batch losses and the Delta_k curve."""
    return _timed(lambda: batch_losses(model, w, directions, thetas, x, y, batch_size=batch_size, device=device), threads)


def run_module(net, directions, thetas, x, y, *, batch_size: int = 64, threads: int | None = None, device=None) -> dict:
    """Time :func:`module_batch_losses` on any torch module; same outputs as :func:`run`."""
    return _timed(lambda: module_batch_losses(net, directions, thetas, x, y, batch_size=batch_size, device=device), threads)


def _timed(losses_fn, threads) -> dict:
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    losses = losses_fn()
    wall = time.perf_counter() - t0
    k, delta, se = delta_from_batch_losses(losses)
    return {"wall_s": wall, "losses": losses, "k": k, "delta": delta, "stderr": se, "torch_threads": torch.get_num_threads()}
