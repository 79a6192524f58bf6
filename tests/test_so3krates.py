"""So3krates: symmetries (χ per degree with e3nn's Wigner D), forces, smoothness at r_cut and at the χ̃ cutoff,
the non-local switch, parameter counts, and a literal loop-based reference of Eqs. 9–19 sharing the model's weights.

No weight-transfer test against so3krates-torch: that package implements the later So3krates (Frank et al.,
Nat. Commun. 2024), whose layer cannot represent the paper's. It has no cross-degree coupled SPHCs χ̃ (Eq. 19) and
so no φ_3 and no ‖χ̃‖ inputs to φ_1, φ_2 (Eqs. 17–18); no non-local term (Eq. 14); χ starts at zero instead of
Eq. 11; its spherical filter reads Clebsch-Gordan-weighted squared norms instead of the L2 distances of Eq. 15;
attention is divided by the average neighbour count, not √F_head; elements enter through a bias-free one-hot
linear layer scaled by 1/√(number of embeddings). Setting eqbench's φ_3 and k to zero would remove χ̃, but the
zero χ⁰ and the different invariants would still make every energy differ. The model docstring lists the same.
"""

import math
from pathlib import Path

import pytest
import torch
import yaml
from e3nn import o3

from eqbench.batch import Batch
from eqbench.errors import ModelError
from eqbench.heads import Energy
from eqbench.models import AtomisticModel, count_parameters, create
from eqbench.nn.sphc import coupling_paths
from tests.model_checks import (
    assert_finite_difference_forces,
    assert_symmetries,
    random_molecules,
    random_rotation,
    with_pos,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(n_features=12, n_interactions=2, n_rbf=6, n_heads=2)


def so3krates_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    rep = create("so3krates", **{**SMALL, **kwargs})
    model = AtomisticModel(rep, [Energy(rep.n_features, forces=True)]).double().eval()
    # Give every weight (biases, k, φ_3 included) a visible value so that no term hides behind a zero.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def one_molecule(n=5, seed=0, spread=1.1):
    return random_molecules(sizes=(n,), seed=seed, spread=spread)


VARIANTS = {
    "local": dict(nonlocal_corrections=False),
    "nonlocal": dict(nonlocal_corrections=True),
    "radial_filter_only": dict(nonlocal_corrections=True, spherical_filter=False),
    "lmax3": dict(lmax=3, nonlocal_corrections=False),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_energy_invariant_forces_equivariant(name):
    model = so3krates_model(**VARIANTS[name], cutoff=3.0)
    assert_symmetries(model, random_molecules(sizes=(5, 7, 3)).to("cpu", torch.float64), tol=1e-9)


@pytest.mark.parametrize("nonlocal_corrections", [False, True])
def test_sphc_equivariant_per_degree_features_invariant(nonlocal_corrections):
    model = so3krates_model(lmax=4, nonlocal_corrections=nonlocal_corrections, cutoff=3.0)
    rep = model.representation
    batch = random_molecules(sizes=(6, 4)).to("cpu", torch.float64)
    rot = random_rotation(5)
    f, chis = rep.run(batch)
    f_rot, chis_rot = rep.run(with_pos(batch, batch.pos @ rot.T + torch.tensor([0.3, -1.0, 2.0])))
    assert torch.allclose(f_rot, f, atol=1e-10, rtol=0)
    for chi, chi_rot in zip(chis, chis_rot):
        offset = 0
        for l in rep.degrees:
            block = slice(offset, offset + 2 * l + 1)
            D = o3.Irrep(l, (-1) ** l).D_from_matrix(rot)
            # e3nn builds D from float32 tables (error ~1e-7 in float64), hence the tolerance.
            assert torch.allclose(chi_rot[:, block], chi[:, block] @ D.T, atol=2e-6, rtol=0), f"degree {l}"
            assert chi[:, block].abs().max() > 1e-3, f"degree {l} is zero: the test would prove nothing"
            offset += 2 * l + 1


@pytest.mark.parametrize("name", ["local", "nonlocal"])
def test_finite_difference_forces_float64(name):
    model = so3krates_model(**VARIANTS[name], cutoff=3.0)
    assert_finite_difference_forces(model, random_molecules(sizes=(5, 4)), tol=1e-6)


def two_bonds(d):
    """C–H and O–H bonds 1.1 Å long, the two carbons/oxygens d apart: every atom keeps a neighbour (Eq. 11)."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [-0.6, 0.9, 0.2], [d, 0.0, 0.0], [d + 0.5, -0.8, 0.4]], dtype=torch.float64)
    return Batch(z=torch.tensor([6, 1, 8, 1]), pos=pos, batch=torch.zeros(4, dtype=torch.long),
                 n_atoms=torch.tensor([4]))


@pytest.mark.parametrize("nonlocal_corrections", [False, True])
def test_smooth_at_radial_cutoff(nonlocal_corrections):
    cutoff = 2.0
    model = so3krates_model(cutoff=cutoff, nonlocal_corrections=nonlocal_corrections)
    # In this geometry the only pair that crosses r_cut is C···O (the H's are farther apart).
    outs = [{k: v.detach() for k, v in model(two_bonds(d)).items()} for d in (cutoff - 1e-7, cutoff + 1e-7)]
    assert abs(float(outs[0]["energy"] - outs[1]["energy"])) < 1e-7
    assert float((outs[0]["forces"] - outs[1]["forces"]).abs().max()) < 1e-5
    # ... and the pair does interact inside the cutoff (otherwise the test proves nothing).
    inside = model(two_bonds(cutoff - 0.3))["energy"]
    far = model(two_bonds(cutoff + 0.3))["energy"]
    assert abs(float((inside - far).detach())) > 1e-4


def scaled_softmax(chi, n):
    """n χ̃_ij for one molecule (dense): row softmax of ‖χ_i − χ_j‖ times n."""
    x = (chi[:, None, :] - chi[None, :, :]).norm(dim=-1)
    return n * torch.softmax(x, dim=1)


def test_smooth_at_sphc_cutoff():
    """Move one atom along a line until a pair's n χ̃_ij (layer 0) crosses 1: energy and forces stay continuous."""
    model = so3krates_model(cutoff=2.5, nonlocal_corrections=True, n_interactions=1)
    rep = model.representation
    batch = one_molecule(6, seed=1, spread=0.9)
    start, step = batch.pos.clone(), torch.zeros_like(batch.pos)
    step[1] = torch.tensor([0.8, -0.5, 0.3])

    def at(t):
        return with_pos(batch, start + t * step)

    def crossing_value(t, pair):
        _, chis = rep.run(at(t))
        return float(scaled_softmax(chis[0].detach(), 6)[pair] - 1.0)

    ts = torch.linspace(0, 1, 41).tolist()
    values = [scaled_softmax(rep.run(at(t))[1][0].detach(), 6) - 1.0 for t in ts]
    pair = None
    for a, b, va, vb in zip(ts[:-1], ts[1:], values[:-1], values[1:]):
        change = ((va * vb) < 0).nonzero()
        change = change[change[:, 0] != change[:, 1]]
        if len(change):
            pair, lo, hi = tuple(change[0].tolist()), a, b
            break
    assert pair is not None, "no pair crosses the χ̃ cutoff along the path; change the path"
    sign_lo = crossing_value(lo, pair) < 0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if (crossing_value(mid, pair) < 0) == sign_lo:
            lo = mid
        else:
            hi = mid
    t0 = 0.5 * (lo + hi)
    outs = [{k: v.detach() for k, v in model(at(t)).items()} for t in (t0 - 1e-9, t0 + 1e-9)]
    assert abs(float(outs[0]["energy"] - outs[1]["energy"])) < 1e-9
    assert float((outs[0]["forces"] - outs[1]["forces"]).abs().max()) < 1e-6


def two_fragments(angle):
    """Two H–C–H fragments 9 Å apart; the second one turned by ``angle`` about its own axis."""
    frag = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.3, 0.0], [-0.5, 0.9, 0.1]], dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    pos = torch.cat([frag, frag @ rot.T + torch.tensor([9.0, 0.0, 0.0])])
    return Batch(z=torch.tensor([6, 1, 1, 6, 1, 1]), pos=pos, batch=torch.zeros(6, dtype=torch.long),
                 n_atoms=torch.tensor([6]))


def test_nonlocal_corrections_reach_beyond_the_effective_cutoff():
    """Fragments farther apart than n_l × r_cut: only the non-local model sees how one is turned (Eq. 14)."""
    kwargs = dict(cutoff=2.0, n_interactions=3)
    local = so3krates_model(nonlocal_corrections=False, **kwargs)
    nonlocal_ = so3krates_model(nonlocal_corrections=True, **kwargs)
    e_local = [float(local(two_fragments(a))["energy"].detach()) for a in (0.0, 0.7)]
    e_nonlocal = [float(nonlocal_(two_fragments(a))["energy"].detach()) for a in (0.0, 0.7)]
    assert abs(e_local[0] - e_local[1]) < 1e-12
    assert abs(e_nonlocal[0] - e_nonlocal[1]) > 1e-6


def test_switches_and_lmax_change_the_model():
    base = dict(n_features=12, n_interactions=2, n_rbf=6, n_heads=2)
    full = create("so3krates", **base, degrees=[1, 2, 3])
    assert full.degrees == [1, 2, 3] and create("so3krates", **base, lmax=3).degrees == [1, 2, 3]
    assert create("so3krates", **base, degrees={2, 1}).degrees == [1, 2]
    no_sph = create("so3krates", **base, lmax=3, spherical_filter=False)
    # φ_s: |L| → F/4 → F per filter, two filters per layer
    F, L = 12, 3
    phi_s = (L * (F // 4) + F // 4) + ((F // 4) * F + F)
    assert count_parameters(full) - count_parameters(no_sph) == 2 * 2 * phi_s
    # the non-local switch adds no weights
    assert count_parameters(create("so3krates", **base, nonlocal_corrections=False)) == \
        count_parameters(create("so3krates", **base, nonlocal_corrections=True))


def expected_parameters(F=132, T=6, K=32, degrees=(1, 2, 3), H=4, n_elements=101, spherical=True):
    """So3krates' parameters counted from the architecture (module docstring), plus the F → F/2 → 1 head."""
    L = len(degrees)
    filt = (K * F + F) + (F * F + F) + (((L * (F // 4) + F // 4) + ((F // 4) * F + F)) if spherical else 0)
    attention = 3 * H * (F // H) ** 2 + 2 * L * (F // L) ** 2
    paths = len(coupling_paths(list(degrees)))
    interaction = ((F + 2 * L) * (F + L) + F + L) + (L * L + L) + paths
    head = (F * (F // 2) + F // 2) + (F // 2 + 1)
    return n_elements * F + T * (2 * filt + attention + interaction) + head


@pytest.mark.parametrize("kwargs", [{}, dict(lmax=4, n_features=128, n_interactions=3),
                                    dict(lmax=1, n_interactions=4, cutoff=2.5, n_features=64)])
def test_parameter_count(kwargs):
    rep = create("so3krates", **kwargs)
    model = AtomisticModel(rep, [Energy(rep.n_features)])
    F, T = kwargs.get("n_features", 132), kwargs.get("n_interactions", 6)
    degrees = tuple(range(1, kwargs["lmax"] + 1)) if "lmax" in kwargs else (1, 2, 3)
    assert count_parameters(model) == expected_parameters(F=F, T=T, degrees=degrees)


def test_default_parameter_count():
    rep = create("so3krates")
    assert count_parameters(AtomisticModel(rep, [Energy(rep.n_features)])) == 601_375


@pytest.mark.parametrize("kwargs, message", [(dict(lmax=0), "lmax"), (dict(n_features=10, lmax=3), "divisible"),
                                             (dict(degrees=[]), "degrees"), (dict(n_interactions=0), "n_interactions")])
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ModelError, match=message):
        create("so3krates", **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Literal reference: the paper's equations with per-atom / per-pair loops, float64, the model's weights.


def dense(layer, x):
    return layer.weight @ x + layer.bias if layer.bias is not None else layer.weight @ x


def mlp(seq, x):
    """Dense layers with SiLU between them (nn.Sequential of Linear and SiLU)."""
    for module in seq:
        x = dense(module, x) if isinstance(module, torch.nn.Linear) else x * torch.sigmoid(x)
    return x


def reference(model, batch):
    """Features, SPHCs and energy of one molecule from Eqs. 9–19, written term by term."""
    rep, head = model.representation, model.heads[0]
    z, pos = batch.z, batch.pos
    n, F, degrees, rc = len(z), rep.n_features, rep.degrees, rep.cutoff
    K = rep.rbf.n_rbf

    def phi_rcut(r):  # cosine cutoff (Eq. 11)
        return 0.5 * (torch.cos(math.pi * r / rc) + 1) if r < rc else torch.zeros((), dtype=torch.float64)

    def rbf(r):  # PhysNet basis
        mu = torch.linspace(math.exp(-rc), 1.0, K, dtype=torch.float64)
        beta = (2.0 / K * (1 - math.exp(-rc))) ** -2
        return torch.exp(-beta * (torch.exp(-r) - mu) ** 2)

    def Y(vec, l):
        return o3.spherical_harmonics(l, vec, normalize=True, normalization="integral")

    def envelope(d, p=6):
        if d >= 1:
            return torch.zeros((), dtype=torch.float64)
        return 1 - (p + 1) * (p + 2) / 2 * d**p + p * (p + 2) * d ** (p + 1) - p * (p + 1) / 2 * d ** (p + 2)

    r = {(i, j): pos[j] - pos[i] for i in range(n) for j in range(n) if i != j}
    dist = {key: v.norm() for key, v in r.items()}
    N = {i: [j for j in range(n) if j != i and dist[i, j] < rc] for i in range(n)}

    f = [rep.embedding.weight[z[i]] for i in range(n)]  # Eq. 9
    chi = []
    for i in range(n):  # Eq. 11
        C = sum((phi_rcut(dist[i, j]) for j in N[i]), torch.zeros((), dtype=torch.float64))
        chi.append({l: sum((phi_rcut(dist[i, j]) * Y(r[i, j], l) for j in N[i]),
                           torch.zeros(2 * l + 1, dtype=torch.float64)) / (C if C > 0 else 1.0) for l in degrees})
    history = [chi]

    def heads_alpha(att, w, i, j, feats):
        """α_ij per head: (W_q f_i)ᵀ (w_ij ⊙ W_k f_j) / √F_h on each head's slice (Eq. 15)."""
        H, Fh = att.n_heads, att.head_dim
        out = []
        for h in range(H):
            s = slice(h * Fh, (h + 1) * Fh)
            q = att.W_q[h].T @ feats[i][s]
            k = att.W_k[h].T @ feats[j][s]
            out.append((q * w[s] * k).sum() / math.sqrt(Fh))
        return out

    for layer in rep.layers:
        # spherical neighbourhoods (Eq. 14)
        chi_w = {}
        if rep.nonlocal_corrections:
            for i in range(n):
                X = [torch.cat([chi[i][l] - chi[j][l] for l in degrees]).norm() for j in range(n)]
                soft = torch.softmax(torch.stack(X), 0)
                for j in range(n):
                    if j != i:
                        chi_w[i, j] = envelope(n * soft[j])
        new_f, new_chi = [], []
        for i in range(n):
            df = torch.zeros(F, dtype=torch.float64)
            dchi = {l: torch.zeros(2 * l + 1, dtype=torch.float64) for l in degrees}
            for j in range(n):
                if j == i:
                    continue
                in_N = j in N[i]
                nonlocal_w = chi_w.get((i, j), torch.zeros((), dtype=torch.float64))
                if not in_N and float(nonlocal_w.detach()) == 0.0:
                    continue
                chi_ij = torch.stack([(chi[j][l] - chi[i][l]).norm() for l in degrees])  # Eq. 15
                e = rbf(dist[i, j])
                w_f = mlp(layer.feature_filter.radial, e)  # Eq. 16
                w_c = mlp(layer.sphc_filter.radial, e)
                if rep.spherical_filter:
                    w_f = w_f + mlp(layer.feature_filter.spherical, chi_ij)
                    w_c = w_c + mlp(layer.sphc_filter.spherical, chi_ij)
                if in_N:  # Eq. 12: Σ φ α v_j per head
                    att = layer.feature_attention
                    alphas = heads_alpha(att, w_f, i, j, f)
                    for h, a in enumerate(alphas):
                        s = slice(h * att.head_dim, (h + 1) * att.head_dim)
                        v = att.W_v[h].T @ f[j][s]
                        df[s] = df[s] + phi_rcut(dist[i, j]) * a * v
                alpha_l = heads_alpha(layer.sphc_attention, w_c, i, j, f)  # one head per degree
                for k, l in enumerate(degrees):
                    weight = (phi_rcut(dist[i, j]) if in_N else 0.0) + nonlocal_w  # Eq. 13 (+ Eq. 14)
                    dchi[l] = dchi[l] + weight * alpha_l[k] * Y(r[i, j], l)
            new_f.append(f[i] + df)
            new_chi.append({l: chi[i][l] + dchi[l] for l in degrees})
        f, chi = new_f, new_chi
        # interaction (Eqs. 17–19)
        paths = layer.coupling.paths
        out_f, out_chi = [], []
        for i in range(n):
            tilde = {l: torch.zeros(2 * l + 1, dtype=torch.float64) for l in degrees}
            for p, (l1, l2, l) in enumerate(paths):
                C = o3.wigner_3j(l1, l2, l, dtype=torch.float64)
                for m1 in range(2 * l1 + 1):
                    for m2 in range(2 * l2 + 1):
                        for m in range(2 * l + 1):
                            term = C[m1, m2, m] * chi[i][l1][m1] * chi[i][l2][m2]
                            tilde[l][m] = tilde[l][m] + layer.coupling.k[p] * term
            norms = torch.stack([chi[i][l].norm() for l in degrees])
            norms_t = torch.stack([tilde[l].norm() if tilde[l].abs().sum() > 0 else torch.zeros((), dtype=torch.float64)
                                   for l in degrees])
            phi = dense(layer.phi_12, torch.cat([f[i], norms, norms_t]))
            phi1, phi2 = phi[:F], phi[F:]
            phi3 = dense(layer.phi_3, norms_t)
            out_f.append(f[i] + phi1)
            out_chi.append({l: chi[i][l] + phi2[k] * chi[i][l] + phi3[k] * tilde[l] for k, l in enumerate(degrees)})
        f, chi = out_f, out_chi
        history.append(chi)
    energy = sum(mlp(head.mlp, f[i])[0] for i in range(n))  # two-layer output block, E = Σ E_i
    return torch.stack(f), [torch.stack([torch.cat([c[i][l] for l in degrees]) for i in range(n)]) for c in history], \
        energy


REFERENCE_CASES = {
    "local_lmax3": dict(lmax=3, nonlocal_corrections=False),
    "nonlocal_lmax1": dict(lmax=1, nonlocal_corrections=True),
    "nonlocal_degrees_0_2_3": dict(degrees=[0, 2, 3], nonlocal_corrections=True),
    "nonlocal_radial_only_lmax2": dict(lmax=2, nonlocal_corrections=True, spherical_filter=False),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_CASES))
def test_loop_reference_matches_model(name):
    model = so3krates_model(cutoff=2.0, **REFERENCE_CASES[name])
    batch = one_molecule(5, seed=1, spread=1.2).to("cpu", torch.float64)
    graph_pairs = torch.cdist(batch.pos, batch.pos)
    assert ((graph_pairs > 2.0).sum() > 0) and ((graph_pairs < 2.0).sum() > 5), "need pairs on both sides of r_cut"
    f_ref, chis_ref, e_ref = reference(model, batch)
    f, chis = model.representation.run(batch)
    assert torch.allclose(f, f_ref, atol=1e-10, rtol=0)
    for chi, chi_ref in zip(chis, chis_ref):
        assert torch.allclose(chi, chi_ref, atol=1e-10, rtol=0)
    assert abs(float((model(batch)["energy"][0] - e_ref).detach())) < 1e-10
    assert chis[-1].abs().max() > 1e-2 and f.abs().max() > 1e-2


# --------------------------------------------------------------------------------------------------------------
# Shipped configs and sweep specs


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["so3krates_cumulene", "so3krates_md17"])
def test_configs_build_their_models(name):
    from eqbench.task import AtomisticTask

    model = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())["model"]
    init = model["representation"]["init_args"]
    rep = create("so3krates", **init)
    task = AtomisticTask(rep, targets=model["targets"],
                         **{k: v for k, v in model.items() if k not in ("representation", "targets")})
    assert {t.name for t in task.targets} == {"energy", "forces"}
    assert rep.nonlocal_corrections == (name == "so3krates_cumulene")
    assert (rep.cutoff, rep.n_interactions) == ((2.5, 4) if name == "so3krates_cumulene" else (5.0, 6))


@pytest.mark.parametrize("name", ["so3krates_cumulene", "so3krates_lmax"])
def test_sweep_reports_parse_with_their_factors(name):
    from eqbench.report.spec import parse_report
    from eqbench.sweep.spec import load_spec

    raw = yaml.safe_load((ROOT / "sweeps" / f"{name}.yaml").read_text())
    for profile in [None, *raw["profiles"]]:
        spec = load_spec(ROOT / "sweeps" / f"{name}.yaml", profile)
        report = parse_report(spec.report, name, {f.name for f in spec.grid})
        assert report.findings, "findings are stated before the results"


def test_only_the_nonlocal_corrections_see_the_cumulene_dihedral_at_2_5_angstrom():
    """Why the local models of So3krates Fig. 2a are flat: at r_cut = 2.5 Å a terminal carbon's neighbourhood
    holds its two hydrogens and the next carbon, and the CH2 plane's orientation appears only in degrees ≥ 2 of
    that carbon's χ (Eq. 11). Eq. 13 passes on Y(r̂_ij) of each atom's own neighbours with invariant weights,
    never χ_j itself, so no degree carries the orientation along the chain: So3krates without the corrections
    predicts the same energy for every φ, at any lmax. Eq. 14 adds Y(r̂_ij) of atoms far apart in R³ and sees φ
    even untrained."""
    import numpy as np

    from eqbench.data.cache import read_cache

    profile = read_cache(Path(__file__).resolve().parents[1] / "eqbench" / "data" / "bundled" / "cumulene_profile.h5")
    idx = np.flatnonzero(profile.properties["n_carbon"].values == 5)
    batch = profile.__getitems__(list(idx)).to("cpu", torch.float64)

    def energy_span(nonlocal_corrections: bool, lmax: int) -> float:
        torch.manual_seed(0)
        rep = create("so3krates", n_features=24, n_interactions=4, cutoff=2.5, lmax=lmax,
                     nonlocal_corrections=nonlocal_corrections).double()
        with torch.no_grad():
            per_atom = rep(batch).scalar.sum(-1)
        energy = torch.zeros(batch.n_molecules, dtype=torch.float64).index_add_(0, batch.batch, per_atom)
        return float(energy.max() - energy.min()) / float(energy.abs().mean())

    # the scan's geometries are stored in float32: 1e-6 relative is their round-off, not a signal
    assert energy_span(False, 3) < 1e-6 and energy_span(False, 1) < 1e-6
    assert energy_span(True, 1) > 1e-5
