"""The PyTorch twin of :class:`jaxland.models.GPT` and the 2026 paper's procedure on it (baselines only).

:class:`TorchGPT` holds the same parameters as a jaxland GPT model, in jaxland's
layout (dense kernels (in, out)) and in the order of jaxland's flat vector, so
one flat vector means the same weights to both. On it, what the code of
Kiselev & Grabovoy 2026 does, one phase at a time:

* :func:`power_eigenpairs` -- top-D eigenpairs by power iteration with
  deflation (``H - sum_i lambda_i u_i u_i^T``), no re-orthogonalisation, a fixed
  number of iterations, each a double-backward Hessian-vector product;
* :func:`direct_mc` -- for each k of a grid and each draw, the parameters are
  written into the module (``p.copy_(w* + z U)``) and the per-sequence losses of
  the first k + 1 sequences give ``L_k`` and ``L_{k+1}``;
* :func:`coefficients` -- for each k: ``a = L_{k+1} - L_k`` and, from
  gradients and HVPs of ``L_k`` (first k sequences) and of the (k+1)-th
  sequence's loss, ``c = U (g_{k+1} - g_k)`` and ``B = U (H_{k+1} - H_k) U^T``
  with ``X_{k+1} - X_k = (x_{k+1} - X_k) / (k+1)`` (exact increments; the
  2026 code took the Hessians of 4 sampled sequences instead);
* :func:`quadratic_mc` and :func:`gaussian_moment` per k, vectorised over draws.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def leaf_layout(model):
    """``[(name, shape)]`` of a jaxland GPT's parameters in the order of its flat vector."""
    import jax
    import jax.numpy as jnp

    tree = model.unravel(jnp.zeros(model.num_params, jnp.float32))
    paths = jax.tree_util.tree_leaves_with_path(tree)
    return [(jax.tree_util.keystr(p).removesuffix(".value"), tuple(a.shape)) for p, a in paths]


class TorchGPT(nn.Module):
    """Pre-norm GPT with jaxland's parameters: same layout, eps 1e-5, tanh gelu, causal softmax attention."""

    def __init__(self, model, w):
        super().__init__()
        spec = model.spec
        self.width, self.depth, self.heads = spec["width"], spec["depth"], spec["heads"]
        self.tied = spec["tie_weights"]
        self.layout = leaf_layout(model)
        self.names = [f"p{i}" for i in range(len(self.layout))]
        self.params = nn.ParameterList([nn.Parameter(t) for t in self.split(torch.tensor(np.asarray(w, np.float32)))])
        self.index = {name: i for i, (name, _) in enumerate(self.layout)}

    def split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A flat jaxland-ordered vector as per-parameter tensors (views)."""
        out, i = [], 0
        for _, shape in self.layout:
            size = math.prod(shape)
            out.append(flat[i : i + size].reshape(shape))
            i += size
        return out

    def flat(self, tensors) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _p(self, path: str) -> torch.Tensor:
        return self.params[self.index[path]]

    def _ln(self, h, path):
        return F.layer_norm(h, (self.width,), self._p(f"{path}['scale']"), self._p(f"{path}['bias']"), eps=1e-5)

    def _dense(self, h, path):
        return h @ self._p(f"{path}['kernel']") + self._p(f"{path}['bias']")

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n, t = tokens.shape
        wte = self._p("['wte']")
        h = wte[tokens] + self._p("['wpe']")[:t]
        hd = self.width // self.heads
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        for i in range(self.depth):
            b = f"['blocks'][{i}]"
            qkv = self._dense(self._ln(h, f"{b}['ln1']"), f"{b}['attn']['qkv']").reshape(n, t, 3, self.heads, hd)
            q, k, v = qkv.unbind(2)
            scores = torch.einsum("nqhd,nkhd->nhqk", q, k) / math.sqrt(hd)
            probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
            att = torch.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, t, self.width)
            h = h + self._dense(att, f"{b}['attn']['proj']")
            mlp = F.gelu(self._dense(self._ln(h, f"{b}['ln2']"), f"{b}['fc']"), approximate="tanh")
            h = h + self._dense(mlp, f"{b}['out']")
        h = self._ln(h, "['ln_f']")
        return h @ (wte.T if self.tied else self._p("['head']"))


def sequence_losses(net: TorchGPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of each sequence (targets -1 ignored), shape (n,)."""
    logits = net(x)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).clamp(min=0), reduction="none").reshape(y.shape)
    valid = (y >= 0).to(ce.dtype)
    return (ce * valid).sum(-1) / valid.sum(-1).clamp(min=1)


def hvp(net: TorchGPT, x, y, v: torch.Tensor) -> torch.Tensor:
    """``H v`` of the mean sequence loss on (x, y) by double backward; ``v`` flat (P,)."""
    params = list(net.params)
    loss = sequence_losses(net, x, y).mean()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    hv = torch.autograd.grad(grads, params, grad_outputs=net.split(v))
    return net.flat(hv).detach()


def grad(net: TorchGPT, x, y) -> torch.Tensor:
    params = list(net.params)
    return net.flat(torch.autograd.grad(sequence_losses(net, x, y).mean(), params)).detach()


def power_eigenpairs(net: TorchGPT, x, y, d: int, *, iters: int, seed: int = 0):
    """Top-``d`` eigenpairs by deflated power iteration (``iters`` HVPs each): (eigenvalues (d,), vectors (d, P), HVPs)."""
    gen = torch.Generator().manual_seed(seed)
    p = sum(t.numel() for t in net.params)
    lams, vecs = [], []
    for _ in range(d):
        v = torch.randn(p, generator=gen)
        v /= v.norm()
        lam = 0.0
        for _ in range(iters):
            hv = hvp(net, x, y, v)
            for l_i, u_i in zip(lams, vecs):  # deflation, no re-orthogonalisation
                hv -= l_i * (u_i @ v) * u_i
            lam = float(v @ hv)
            v = hv / hv.norm()
        lams.append(lam)
        vecs.append(v)
    return np.asarray(lams), torch.stack(vecs), d * iters


def direct_mc(net: TorchGPT, w: torch.Tensor, u: torch.Tensor, z: torch.Tensor, x, y, ks) -> tuple[np.ndarray, np.ndarray]:
    """For each k in ``ks``: mean and standard error over the draws ``z`` (T, D) of ``(L_{k+1} - L_k)^2`` at ``w + z U``."""
    base = net.split(w)
    deltas, ses = [], []
    with torch.no_grad():
        for k in ks:
            q = []
            for zt in z:
                for p, b, dp in zip(net.params, base, net.split(zt @ u)):  # write the draw into the module
                    p.copy_(b + dp)
                losses = sequence_losses(net, x[: k + 1], y[: k + 1]).double()
                q.append(float((losses.mean() - losses[:k].mean()) ** 2))
            q = np.asarray(q)
            deltas.append(q.mean())
            ses.append(q.std(ddof=1) / np.sqrt(len(q)))
        for p, b in zip(net.params, base):
            p.copy_(b)
    return np.asarray(deltas), np.asarray(ses)


def coefficients(net: TorchGPT, u: torch.Tensor, x, y, ks):
    """``(a, c, B)`` at the module's weights for each k in ``ks`` from gradients and HVPs."""
    out_a, out_c, out_b = [], [], []
    for k in ks:
        with torch.no_grad():
            losses = sequence_losses(net, x[: k + 1], y[: k + 1]).double()
        a = float((losses[k] - losses[:k].mean()) / (k + 1))
        g_k, g_1 = grad(net, x[:k], y[:k]), grad(net, x[k : k + 1], y[k : k + 1])
        hu_k = torch.stack([hvp(net, x[:k], y[:k], ui) for ui in u])
        hu_1 = torch.stack([hvp(net, x[k : k + 1], y[k : k + 1], ui) for ui in u])
        c = (u @ (g_1 - g_k)) / (k + 1)
        b = (u @ (hu_1 - hu_k).T) / (k + 1)
        out_a.append(a)
        out_c.append(c.double().numpy())
        out_b.append((0.5 * (b + b.T)).double().numpy())
    return np.asarray(out_a), np.stack(out_c), np.stack(out_b)


def quadratic_mc(a, c, b, z) -> tuple[np.ndarray, np.ndarray]:
    """Per k: mean and SE over draws of ``(a + c.z + z^T B z / 2)^2`` (torch, vectorised over draws)."""
    z = torch.tensor(np.asarray(z), dtype=torch.float64)
    deltas, ses = [], []
    for ak, ck, bk in zip(a, c, b):
        q = (ak + z @ torch.as_tensor(ck) + 0.5 * torch.einsum("td,de,te->t", z, torch.as_tensor(bk), z)) ** 2
        deltas.append(float(q.mean()))
        ses.append(float(q.std() / math.sqrt(q.numel())))
    return np.asarray(deltas), np.asarray(ses)


def gaussian_moment(a, c, b, sigma: float) -> np.ndarray:
    """Per k: ``a^2 + a s^2 tr B + s^2 |c|^2 + s^4 (2 tr B^2 + (tr B)^2) / 4`` (torch)."""
    out = []
    s2 = sigma * sigma
    for ak, ck, bk in zip(a, c, b):
        bt, ct = torch.as_tensor(bk), torch.as_tensor(ck)
        tr = torch.trace(bt)
        out.append(float(ak * ak + ak * s2 * tr + s2 * (ct @ ct) + s2 * s2 * (2 * (bt * bt).sum() + tr * tr) / 4))
    return np.asarray(out)
