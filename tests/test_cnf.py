"""pnode.models.CNF (FFJORD) against brute-force references.

- log-density: the exact-trace CNF agrees with the change-of-variables formula, with
  log|det dz(T)/dz(0)| from autograd through a fine plain-torch RK4 of the plain ODE;
- Hutchinson: the mean over many noise draws (Gaussian and Rademacher) matches the exact
  trace and Frobenius norm within 5 standard errors;
- gradients: with fixed RK4 steps, pnode's discrete-adjoint gradients of log_prob (plus the
  RNODE terms) equal plain-torch backprop through the same RK4 of the same augmented
  dynamics (1e-9 relative; the field's divergence is differentiated a second time), and
  central finite differences (1e-6); adaptive dopri5 agrees with a fine fixed-step
  reference (1e-5);
- MPI: 2 ranks under mpiexec give the losses and gradients of 1 rank to 1e-10.
"""
import math

import numpy as np
import pytest
import torch

from pnode.models import CNF, CNFDynamics, ODENet, exact_divergence, standard_normal_logprob
from helpers import flat_grads, rel_err, run_worker
from reference import rk4

DT = torch.float64


def make_cnf(dim=2, seed=0, scale=2.5, **kw):
    """A small float64 CNF with weights scaled up so that the flow is far from identity."""
    torch.manual_seed(seed)
    cnf = CNF(dim, hidden=(16, 16), **kw).double()
    with torch.no_grad():
        for p in cnf.parameters():
            p.mul_(scale)
    return cnf


def test_log_density_matches_change_of_variables():
    cnf = make_cnf(rtol=1e-11, atol=1e-13)
    x = torch.randn(5, 2, dtype=DT)
    with torch.no_grad():
        logp = cnf.log_prob(x)
    net = cnf.net

    def flow(x0):  # the plain ODE dz/dt = net(t, z), no trace
        return rk4(lambda t, y: (net(t, y[0]),), (x0,), 0.0, 1.0, 400)[0]
    zT = flow(x)
    # rows do not mix, so the Jacobian of the batch sum holds every row's Jacobian: (2, 5, 2)
    jac = torch.autograd.functional.jacobian(lambda x0: flow(x0).sum(0), x)
    logdet = torch.stack([torch.linalg.slogdet(jac[:, i, :])[1] for i in range(5)])
    ref = standard_normal_logprob(zT) + logdet
    assert (logdet.abs() > 0.1).all()  # a non-trivial volume change
    assert (logp - ref).abs().max() < 1e-7
    # sampling inverts it: the backward flow from z(T) returns x and the same log-density
    with torch.no_grad():
        xs, logp_s = cnf.sample(5, z=zT.detach(), return_log_prob=True)
    assert (xs - x).abs().max() < 1e-7
    assert (logp_s - ref).abs().max() < 1e-7
    cnf.close()


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    torch.manual_seed(1)
    net = ODENet(5, hidden=(32,), activation="softplus").double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
    z = torch.randn(3, 5, dtype=DT)
    t = torch.tensor(0.4, dtype=DT)
    zz = z.clone().requires_grad_(True)
    exact_div, exact_frob = exact_divergence(net(t, zz), zz, create_graph=False, frobenius=True)
    K = 20000
    dyn = CNFDynamics(net, "hutchinson")
    gen = torch.Generator().manual_seed(2)
    e = torch.randn(K * 3, 5, generator=gen, dtype=DT)
    if noise == "rademacher":
        e = e.sign()
    dyn.noise = e
    with torch.no_grad():
        out = dyn(t, (z.repeat(K, 1), torch.zeros(K * 3, dtype=DT), torch.zeros(K * 3, dtype=DT),
                      torch.zeros(K * 3, dtype=DT)))
    for est, exact in ((-out[1], exact_div), (out[3], exact_frob)):
        est = est.reshape(K, 3)
        err = (est.mean(0) - exact).abs()
        assert (err < 5 * est.std(0) / math.sqrt(K) + 1e-12).all(), (noise, err)
    assert exact_div.abs().max() > 0.1  # a non-trivial trace


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_gradients_match_backprop_through_same_rk4(trace):
    cnf = make_cnf(trace=trace, method="rk4", options={"step_size": 0.05},
                   kinetic_weight=0.3, jacobian_weight=0.2)
    x = torch.randn(6, 2, dtype=DT)
    noise = torch.randn(6, 2, dtype=DT) if trace == "hutchinson" else None

    x1 = x.clone().requires_grad_(True)
    logp, reg = cnf.log_prob(x1, return_reg=True, noise=noise)
    loss = (reg - logp).mean()
    loss.backward()
    g_pnode, gx_pnode = flat_grads(cnf), x1.grad.clone()

    cnf.zero_grad()
    x2 = x.clone().requires_grad_(True)
    cnf.dynamics.noise = noise
    z0 = torch.zeros(6, dtype=DT)
    zT, dl, kin, jac = rk4(cnf.dynamics, (x2, z0, z0, z0), 0.0, 1.0, 20)
    loss_ref = (0.3 * kin + 0.2 * jac - (standard_normal_logprob(zT) - dl)).mean()
    loss_ref.backward()
    assert abs(loss.item() - loss_ref.item()) < 1e-12 * abs(loss_ref.item())
    assert rel_err(g_pnode, flat_grads(cnf)) < 1e-9
    assert rel_err(gx_pnode, x2.grad) < 1e-9
    cnf.close()


def test_gradients_match_finite_differences():
    cnf = make_cnf(method="rk4", options={"step_size": 0.05})
    x = torch.randn(6, 2, dtype=DT)
    loss = -cnf.log_prob(x).mean()
    loss.backward()
    params = list(cnf.parameters())
    gen = torch.Generator().manual_seed(0)
    eps = 1e-6
    for p in (params[0], params[-1], params[4]):  # first/last layer weights, a hyper-gate
        for _ in range(3):
            i = int(torch.randint(0, p.numel(), (1,), generator=gen))
            with torch.no_grad():
                old = p.view(-1)[i].item()
                p.view(-1)[i] = old + eps
                up = -cnf.log_prob(x).mean().item()
                p.view(-1)[i] = old - eps
                down = -cnf.log_prob(x).mean().item()
                p.view(-1)[i] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - p.grad.view(-1)[i].item()) < 1e-6 * max(1.0, abs(fd)), (fd, p.grad.view(-1)[i])
    cnf.close()


def test_adaptive_gradient_matches_fine_fixed_step_reference():
    x = torch.randn(6, 2, dtype=DT)
    grads = []
    for kw in (dict(rtol=1e-9, atol=1e-11), dict(method="rk4", options={"step_size": 0.005})):
        cnf = make_cnf(**kw)
        (-cnf.log_prob(x).mean()).backward()
        grads.append(flat_grads(cnf))
        cnf.close()
    assert rel_err(grads[0], grads[1]) < 1e-5


def test_backward_uses_the_noise_of_its_own_solve():
    """A second log_prob (new noise) before the first one's backward must not change the
    first one's gradient (the adjoint re-solves with the first solve's noise)."""
    grads = []
    for extra in (False, True):
        cnf = make_cnf(trace="hutchinson", seed=4)
        x = torch.randn(5, 2, dtype=DT, generator=torch.Generator().manual_seed(5))
        loss = -cnf.log_prob(x).mean()
        if extra:
            with torch.no_grad():
                cnf.log_prob(x)                   # draws new noise, same solver
            cnf.log_prob(x, trace="exact").sum()  # another graph, never backpropagated
        loss.backward()
        grads.append(flat_grads(cnf))
        cnf.close()
    assert rel_err(grads[1], grads[0]) < 1e-12


def test_mpi_two_ranks_match_one_rank(tmp_path):
    proc = run_worker("workers/cnf_mpi_worker.py", tmp_path, ranks=2, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for case in ("exact", "hutchinson"):
        r = dict(np.load(tmp_path / f"{case}.npz"))
        assert int(r["ranks"]) == 2
        keys = [k[4:] for k in r if k.startswith("ser_")]
        assert any(k.startswith("grad1_") for k in keys)
        for k in keys:
            a, b = r["par_" + k], r["ser_" + k]
            assert np.abs(a - b).max() <= 1e-10 * max(np.abs(b).max(), 1e-300), (case, k)
