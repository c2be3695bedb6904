"""Numbers of a perturbation, per layer, module, sender and query: ||dW||_F, singular values, each sender's share,
flat per-query features and their spread, and the 2-D embeddings (UMAP, PCA) the activation views draw."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..lora import Perturbation

UMAP_MIN_POINTS = 12


def _factors(
    p: Perturbation, layer: int, name: str, sample: int = 0, sender: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B (out, R), A (R, in)) in float64 on the CPU with w_i * alpha/r folded into B; B @ A = delta()."""
    a = p.A[name][sample, :, layer].detach().double().cpu()  # (S, r, in)
    b = p.B[name][sample, :, layer].detach().double().cpu()  # (S, out, r)
    w = p.weights[sample].detach().double().cpu() * p.scaling
    if sender is not None:
        return w[sender] * b[sender], a[sender]
    b = (b * w[:, None, None]).permute(1, 0, 2).reshape(b.shape[1], -1)
    return b, a.reshape(-1, a.shape[-1])


def frobenius(p: Perturbation, layer: int, name: str, sample: int = 0, sender: int | None = None) -> float:
    """||dW||_F of one module from its factors."""
    b, a = _factors(p, layer, name, sample, sender)
    return float(((b.T @ b) * (a @ a.T)).sum().clamp(min=0.0).sqrt())


def delta_norms(p: Perturbation, sample: int = 0, sender: int | None = None) -> np.ndarray:
    """(layers, modules) Frobenius norms of the fused dW (or one sender's weighted share)."""
    return np.array(
        [[frobenius(p, layer, name, sample, sender) for name in p.spec.modules] for layer in range(p.spec.num_layers)]
    )


def sender_layer_norms(p: Perturbation, sample: int = 0) -> np.ndarray:
    """(senders, layers): each sender's share of dW per layer, sqrt of the sum over modules of ||dW_i||_F^2."""
    return np.stack([np.sqrt((delta_norms(p, sample, i) ** 2).sum(axis=1)) for i in range(len(p.senders))])


def sender_shares(p: Perturbation, sample: int = 0) -> np.ndarray:
    """(senders,): each sender's share of the perturbation's size, its ‖ΔW_i‖_F over every layer and module
    as a fraction of the senders' sum (zeros for a zero perturbation)."""
    size = np.sqrt((sender_layer_norms(p, sample) ** 2).sum(axis=1))
    total = size.sum()
    return size / total if total > 0 else np.zeros_like(size)


def spectrum(p: Perturbation, layer: int, name: str, sample: int = 0) -> np.ndarray:
    """The nonzero part of dW's singular values: the first S*r of them, largest first (the rest are 0)."""
    b, a = _factors(p, layer, name, sample)
    rb = torch.linalg.qr(b, mode="r").R
    ra = torch.linalg.qr(a.T, mode="r").R
    return torch.linalg.svdvals(rb @ ra.T).numpy()


def perturbation_features(
    p: Perturbation, sample: int, kind: str = "sketch", probes: int = 4, seed: int = 0
) -> np.ndarray:
    """One query's perturbation as a vector.

    sketch: dW @ P for a fixed Gaussian P (in x probes) per module, all layers concatenated: a
      random projection of the flattened dW (vec(dW P) = (P^T kron I) vec(dW)), so distances
      between queries are preserved in expectation without materialising dW.
    pooled: the (layers x modules) grid of ||dW||_F.
    """
    if kind == "pooled":
        return delta_norms(p, sample).ravel()
    if kind != "sketch":
        raise ValueError(f"unknown feature kind {kind!r}: use 'sketch' or 'pooled'")
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for name, (_, fan_in) in p.spec.modules.items():
        probe = torch.randn(fan_in, probes, generator=gen, dtype=torch.float64) / math.sqrt(probes)
        for layer in range(p.spec.num_layers):
            b, a = _factors(p, layer, name, sample)
            parts.append((b @ (a @ probe)).ravel())
    return torch.cat(parts).numpy()


def relative_spread(features: np.ndarray) -> float:
    """Mean distance of the queries' vectors to their mean, over their mean norm (0: all identical)."""
    norms = np.linalg.norm(features, axis=1)
    if norms.mean() == 0:
        return 0.0
    return float(np.linalg.norm(features - features.mean(axis=0), axis=1).mean() / norms.mean())


@dataclass
class Embedding:
    """2-D coordinates of a point cloud, the method that produced them and why."""

    coords: np.ndarray  # (n, 2)
    method: str  # "UMAP" | "PCA"
    note: str = ""


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components (zero-padded when there are fewer)."""
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def embed_2d(x: np.ndarray, seed: int = 0, min_points: int = UMAP_MIN_POINTS) -> Embedding:
    """UMAP to 2-D; PCA with a note when there are too few or identical points."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    if n < min_points:
        return Embedding(pca_2d(x), "PCA", f"only {n} points (UMAP needs at least {min_points}): PCA instead")
    if np.ptp(x, axis=0).max(initial=0.0) == 0.0:
        return Embedding(pca_2d(x), "PCA", "all points are identical: PCA instead of UMAP")
    import umap  # slow to import (numba): only here and in warm_umap

    reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, random_state=seed, init="random", n_jobs=1)
    return Embedding(reducer.fit_transform(x), "UMAP")


def warm_umap() -> None:
    """Import umap-learn and compile its numba kernels once, so the first real plot is quick."""
    embed_2d(np.random.default_rng(0).normal(size=(2 * UMAP_MIN_POINTS, 8)))
