"""PyTorch Geometric's DimeNet / DimeNetPlusPlus next to eqbench's (tests and benchmarks only).

PyG's models build their graph with torch_cluster's ``radius_graph`` and torch_sparse's triplets, which have
no wheels here; :func:`pyg_graph_from_eqbench` replaces the two helpers in PyG's module with eqbench's own
neighbour list and triplets, so both models see the same graph. :func:`transfer_weights` copies a PyG
model's weights into an eqbench model (and its linear head), rescaling where the bases differ by constants.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from eqbench.bench.contenders import pyg_edge_index, pyg_triplets
from eqbench.geometry import radius_graph, triplets
from eqbench.nn.spherical import _j


def import_pyg_dimenet():
    """The ``torch_geometric.nn.models.dimenet`` module, or None when PyG (or sympy) is missing."""
    try:
        import sympy  # noqa: F401  (PyG's spherical basis needs it)
        from torch_geometric.nn.models import dimenet
    except ImportError:
        return None
    return dimenet


@contextlib.contextmanager
def pyg_graph_from_eqbench(dimenet_module):
    """Within the block, PyG's DimeNet builds its radius graph and triplets with eqbench.geometry."""

    def pyg_radius_graph(pos, r, batch=None, max_num_neighbors=32, **_):
        if batch is None:
            batch = torch.zeros(pos.shape[0], dtype=torch.long, device=pos.device)
        n_atoms = torch.bincount(batch)
        graph = radius_graph(pos.detach(), batch, n_atoms, r)
        return pyg_edge_index(graph.center, graph.neighbor)

    def pyg_triplets_from_edges(edge_index, num_nodes):
        neighbor, center = edge_index
        return pyg_triplets(center, neighbor, triplets(center, neighbor, num_nodes))

    saved = dimenet_module.radius_graph, dimenet_module.triplets
    dimenet_module.radius_graph, dimenet_module.triplets = pyg_radius_graph, pyg_triplets_from_edges
    try:
        yield
    finally:
        dimenet_module.radius_graph, dimenet_module.triplets = saved


def _copy(dst: torch.nn.Parameter, src: torch.Tensor, scale: float = 1.0) -> None:
    with torch.no_grad():
        dst.copy_(src.detach().to(dst.dtype) * scale)


def _copy_linear(dst, src, scale: float = 1.0) -> None:
    _copy(dst.weight, src.weight, scale)
    if src.bias is not None:
        _copy(dst.bias, src.bias)


def _copy_residuals(dst_layers, src_layers) -> None:
    for d, s in zip(dst_layers, src_layers, strict=True):
        _copy_linear(d.lin1, s.lin1)
        _copy_linear(d.lin2, s.lin2)


def transfer_weights(pyg, model) -> None:
    """Copy PyG ``DimeNet``/``DimeNetPlusPlus`` weights into an eqbench ``AtomisticModel`` (DimeNet, one head).

    Constants between the bases: PyG's radial basis is u(x)/x · sin(f x) with x = d/c, i.e. c·sqrt(c/2) times
    Eq. (7) × u; its 2D basis is c^{5/2} times eqbench's u(d)/d · ã_SBF. Linear layers that read a basis
    absorb the constant. PyG's Bessel roots are float32: they are copied too.
    """
    rep, head = model.representation, model.heads[0]
    c = rep.cutoff
    rbf_scale, sbf_scale = c * math.sqrt(c / 2), c**2.5
    _copy(rep.rbf.freqs, pyg.rbf.freq, 1.0 / c)
    roots = torch.as_tensor(np.asarray(_pyg_roots(rep.n_spherical, rep.n_radial), dtype=np.float64))
    j_next = np.stack([_j(l + 1, roots[l].numpy()) for l in range(rep.n_spherical)])
    with torch.no_grad():
        rep.sbf_radial.roots.copy_(roots)
        rep.sbf_radial.norm.copy_(torch.as_tensor(np.sqrt(2.0 / (c**3 * j_next**2))))
    emb = rep.embedding
    n_types = pyg.emb.emb.weight.shape[0]
    with torch.no_grad():
        emb.embedding.weight[:n_types].copy_(pyg.emb.emb.weight)
    _copy_linear(emb.lin_rbf, pyg.emb.lin_rbf, rbf_scale)
    f = rep.hidden_features
    w = pyg.emb.lin.weight  # PyG concatenates [h_i, h_j, rbf]; Eq. (9) is [h_j, h_i, rbf]
    _copy(emb.lin.weight, torch.cat([w[:, f:2 * f], w[:, :f], w[:, 2 * f:]], dim=1))
    _copy(emb.lin.bias, pyg.emb.lin.bias)
    for d, s in zip(rep.interactions, pyg.interaction_blocks, strict=True):
        _copy_linear(d.lin_ji, s.lin_ji)
        _copy_linear(d.lin_kj, s.lin_kj)
        _copy_linear(d.lin, s.lin)
        _copy_residuals(d.before_skip, s.layers_before_skip)
        _copy_residuals(d.after_skip, s.layers_after_skip)
        if hasattr(s, "W"):  # DimeNet
            _copy_linear(d.lin_rbf, s.lin_rbf, rbf_scale)
            _copy_linear(d.lin_sbf, s.lin_sbf, sbf_scale)
            _copy(d.bilinear, s.W)
        else:  # DimeNet++
            _copy_linear(d.lin_rbf1, s.lin_rbf1, rbf_scale)
            _copy_linear(d.lin_rbf2, s.lin_rbf2)
            _copy_linear(d.lin_sbf1, s.lin_sbf1, sbf_scale)
            _copy_linear(d.lin_sbf2, s.lin_sbf2)
            _copy_linear(d.lin_down, s.lin_down)
            _copy_linear(d.lin_up, s.lin_up)
    finals = []
    for d, s in zip(rep.outputs, pyg.output_blocks, strict=True):
        _copy_linear(d.lin_rbf, s.lin_rbf, rbf_scale)
        if d.lin_up is not None:
            _copy_linear(d.lin_up, s.lin_up)
        for dl, sl in zip(d.lins, s.lins, strict=True):
            _copy_linear(dl, sl)
        finals.append(s.lin.weight)
    _copy(head.mlp[0].weight, torch.cat(finals, dim=1))


def _pyg_roots(n_spherical: int, n_radial: int):
    from torch_geometric.nn.models.dimenet_utils import Jn_zeros

    return Jn_zeros(n_spherical, n_radial)
