"""What the fused optimizers refuse, and that a refused step changes nothing: the options
torch.optim rejects, a parameter listed twice, bad state (loaded or set by hand), GradScaler
tensors without values. Also FusedSGD on float16 parameters against torch.optim.SGD, and the
step under torch.compile."""
from __future__ import annotations

import copy
import traceback

import pytest
import torch

from mlperf_fast.optim import FusedAdam, FusedAdamW, FusedLAMB, FusedLARS, FusedSGD

MAKERS = {
    "lamb": lambda ps, **kw: FusedLAMB(ps, **{"lr": 1e-2, **kw}),
    "adam": lambda ps, **kw: FusedAdam(ps, **{"lr": 1e-2, **kw}),
    "adamw": lambda ps, **kw: FusedAdamW(ps, **{"lr": 1e-2, **kw}),
    "sgd": lambda ps, **kw: FusedSGD(ps, **{"lr": 1e-2, "momentum": 0.9, **kw}),
    "lars": lambda ps, **kw: FusedLARS(ps, **{"lr": 1e-2, **kw}),
}
STATE_KEY = {"lamb": "exp_avg", "adam": "exp_avg_sq", "adamw": "exp_avg", "sgd": "momentum_buffer",
             "lars": "momentum_buffer"}
NAN, INF = float("nan"), float("inf")

BAD_OPTIONS = [
    # (optimizers, options, error, what the message names)
    (MAKERS, dict(lr=-1e-3), ValueError, "lr"),
    (MAKERS, dict(lr=NAN), ValueError, "lr"),
    (MAKERS, dict(lr=INF), ValueError, "lr"),
    (MAKERS, dict(lr="0.1"), TypeError, "lr"),
    (MAKERS, dict(lr=torch.tensor([0.1, 0.2])), ValueError, "lr"),
    (MAKERS, dict(lr=torch.tensor(-0.1)), ValueError, "lr"),
    (MAKERS, dict(lr=torch.tensor(0.1, device="meta")), ValueError, "meta"),
    (MAKERS, dict(weight_decay=-1e-4), ValueError, "weight_decay"),
    (MAKERS, dict(weight_decay=NAN), ValueError, "weight_decay"),
    (("lamb", "adam", "adamw", "lars"), dict(eps=-1e-8), ValueError, "eps"),
    (("lamb", "adam", "adamw", "lars"), dict(eps=NAN), ValueError, "eps"),
    (("lamb", "adam", "adamw"), dict(betas=(1.0, 0.999)), ValueError, "betas[0]"),
    (("lamb", "adam", "adamw"), dict(betas=(0.9, -0.1)), ValueError, "betas[1]"),
    (("lamb", "adam", "adamw"), dict(betas=(0.9, NAN)), ValueError, "betas[1]"),
    (("lamb", "adam", "adamw"), dict(betas=(0.9,)), TypeError, "betas"),
    (("lamb",), dict(max_grad_norm=NAN), ValueError, "max_grad_norm"),
    (("sgd", "lars"), dict(momentum=-0.9), ValueError, "momentum"),
    (("sgd", "lars"), dict(momentum=NAN), ValueError, "momentum"),
    (("sgd",), dict(nesterov=True, momentum=0.0), ValueError, "nesterov"),
    (("sgd",), dict(nesterov=True, dampening=0.1), ValueError, "nesterov"),
    (("lars",), dict(trust_coefficient=0.0), ValueError, "trust_coefficient"),
]
CASES = [(name, kw, err, word) for names, kw, err, word in BAD_OPTIONS for name in names]


def _params(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype))
            for s in ((4, 3), (5,), (2, 2), (3,))]


def _grads(params, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


def _two_groups(name, **kw):
    params = _params()
    opt = MAKERS[name]([dict(params=params[:2]), dict(params=params[2:])], **kw)
    _grads(params)
    opt.step()
    _grads(params, seed=2)
    return params, opt


def _snapshot(params, opt):
    return ([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()))


def _assert_unchanged(params, opt, snap):
    weights, state = snap
    for p, w in zip(params, weights):
        assert torch.equal(p.detach(), w)
    now = opt.state_dict()
    assert now["state"].keys() == state["state"].keys()
    for pid, entry in state["state"].items():
        assert now["state"][pid].keys() == entry.keys()
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(now["state"][pid][key]), torch.as_tensor(value)), key


@pytest.mark.parametrize("name, options, error, word", CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_options_are_refused(name, options, error, word):
    with pytest.raises(error, match=word.replace("[", r"\[").replace("]", r"\]")):
        MAKERS[name](_params(), **options)


@pytest.mark.parametrize("name", MAKERS)
def test_a_bad_group_added_later_is_refused_and_not_kept(name):
    params = _params()
    opt = MAKERS[name](params[:2])
    with pytest.raises(ValueError, match="param group 1: lr"):
        opt.add_param_group(dict(params=params[2:], lr=-1.0))
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("spoil", ["lr", "option", "state shape", "state dtype", "grad dtype"])
def test_a_bad_second_group_changes_nothing(name, spoil):
    params, opt = _two_groups(name)
    snap = _snapshot(params, opt)
    if spoil == "lr":
        opt.param_groups[1]["lr"] = NAN
        error, match = ValueError, "param group 1: lr"
    elif spoil == "option":
        opt.param_groups[1]["weight_decay"] = -1.0
        error, match = ValueError, "param group 1: weight_decay"
    elif spoil == "state shape":
        opt.state[params[3]][STATE_KEY[name]] = torch.zeros(7)
        snap = _snapshot(params, opt)
        error, match = ValueError, "shape"
    elif spoil == "state dtype":
        opt.state[params[3]][STATE_KEY[name]] = torch.zeros(3, dtype=torch.int32)
        snap = _snapshot(params, opt)
        error, match = TypeError, "dtype"
    else:
        params[3].grad.data = params[3].grad.data.double()
        error, match = TypeError, "gradient of dtype"
    with pytest.raises(error, match=match):
        opt.step()
    _assert_unchanged(params, opt, snap)


@pytest.mark.parametrize("name", MAKERS)
def test_a_parameter_twice_is_refused(name):
    p, q = _params()[:2]
    with pytest.raises(ValueError, match="twice"):
        MAKERS[name]([p, q, p])
    with pytest.raises(ValueError, match="more than one parameter group"):  # torch.optim's
        MAKERS[name]([dict(params=[p]), dict(params=[q, p])])
    # Listed again in place, after construction: refused at the step, before any change.
    opt = MAKERS[name]([dict(params=[p]), dict(params=[q])])
    _grads([p, q])
    opt.step()
    opt.param_groups[1]["params"].append(p)
    snap = _snapshot([p, q], opt)
    with pytest.raises(ValueError, match="param groups 0 and 1"):
        opt.step()
    opt.param_groups[1]["params"].pop()
    _assert_unchanged([p, q], opt, snap)


@pytest.mark.parametrize("name", MAKERS)
def test_load_state_dict_checks_before_loading(name):
    params, opt = _two_groups(name)
    good = copy.deepcopy(opt.state_dict())
    snap = _snapshot(params, opt)
    key = STATE_KEY[name]

    def spoiled(fn):
        sd = copy.deepcopy(good)
        fn(sd)
        return sd

    def reshape(sd):
        sd["state"][1][key] = torch.zeros(6)

    def retype(sd):
        sd["state"][0][key] = torch.zeros(4, 3, dtype=torch.int64)

    def drop(sd):
        del sd["state"][0][key]

    def stranger(sd):
        sd["state"][99] = {"step": torch.tensor(1.0)}

    def bad_lr(sd):
        sd["param_groups"][1]["lr"] = -1.0

    cases = [(reshape, ValueError, "shape"), (retype, TypeError, "dtype"),
             (stranger, ValueError, "99"), (bad_lr, ValueError, "param group 1: lr"),
             (lambda sd: sd["param_groups"].pop(), ValueError, "param groups"),
             (lambda sd: sd.pop("state"), ValueError, "state")]
    if name != "sgd":  # torch.optim.SGD's state may lack the buffer (momentum 0)
        cases.append((drop, ValueError, key))
    for fn, error, match in cases:
        with pytest.raises(error, match=match):
            opt.load_state_dict(spoiled(fn))
        _assert_unchanged(params, opt, snap)
    opt.load_state_dict(good)
    opt.step()


@pytest.mark.parametrize("name", MAKERS)
@pytest.mark.parametrize("which", ["grad_scale", "found_inf"])
def test_meta_scaler_tensors_are_refused(name, which):
    params, opt = _two_groups(name)
    snap = _snapshot(params, opt)
    setattr(opt, which, torch.ones((), device="meta"))
    with pytest.raises(ValueError, match=f"{which}.*meta"):
        opt.step()
    _assert_unchanged(params, opt, snap)
    setattr(opt, which, torch.ones(2))
    with pytest.raises(ValueError, match=f"{which} must have one element"):
        opt.step()
    setattr(opt, which, None)
    opt.step()


@pytest.mark.parametrize("name", MAKERS)
def test_meta_parameters_are_refused(name):
    p = torch.nn.Parameter(torch.ones(3, device="meta"))
    p.grad = torch.ones(3, device="meta")
    with pytest.raises(ValueError, match="meta"):
        MAKERS[name]([p]).step()


# -- FusedSGD on low-precision parameters (their plain update: tests/optim/test_sgd.py) -------

def test_sgd_master_weights_on_request():
    p = torch.nn.Parameter(torch.randn(10).half())
    opt = FusedSGD([p], lr=0.1, momentum=0.9, master_weights=True)
    p.grad = torch.randn(10).half()
    opt.step()
    st = opt.state[p]
    assert st["master_param"].dtype == torch.float32
    assert st["momentum_buffer"].dtype == torch.float32
    torch.testing.assert_close(p.detach(), st["master_param"].half(), rtol=0, atol=0)
    # Loaded into an optimizer without master weights, the copy is dropped and the buffer
    # takes the parameter's dtype, as torch.optim.SGD keeps it.
    plain = FusedSGD([p], lr=0.1, momentum=0.9)
    plain.load_state_dict(opt.state_dict())
    assert "master_param" not in plain.state[p]
    assert plain.state[p]["momentum_buffer"].dtype == torch.float16


# -- torch.compile ------------------------------------------------------------------------------

def _compile_or_blame_ops(fn):
    """Runs ``fn`` compiled with fullgraph=True. A graph break inside mlperf_fast/ops (the
    ops' backend choice and host-side value reads) is the ops layer's and xfails; anywhere
    else it fails the test."""
    import torch._dynamo

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    try:
        compiled()
        compiled()
    except Exception as e:  # noqa: BLE001 - classified below
        frames = [f for f in traceback.extract_tb(e.__traceback__)] + [
            f for f in _user_frames(str(e))]
        ours = [f for f in frames if "mlperf_fast" in f]
        if ours and "mlperf_fast/ops/" in ours[-1]:
            pytest.xfail(f"graph break in the ops layer: {ours[-1]}")
        raise


def _user_frames(message: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if line.strip().startswith("File ")]


@pytest.mark.parametrize("fresh", [True, False], ids=["fresh", "after-eager-step"])
@pytest.mark.parametrize("backend_name", ["torch", "auto"])
@pytest.mark.parametrize("name", ["lamb", "adam", "sgd", "lars"])
def test_step_compiles_fullgraph(name, backend_name, fresh):
    params = _params()
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = MAKERS[name](params, backend=backend_name)
    ref = MAKERS[name](twin, backend=backend_name)
    for ps in (params, twin):
        _grads(ps)
    if not fresh:  # state made eagerly; the compiled steps find it
        opt.step()
        ref.step()
    _compile_or_blame_ops(opt.step)
    ref.step()
    ref.step()
    for a, b in zip(params, twin):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
        for key in opt.state[a]:
            torch.testing.assert_close(torch.as_tensor(opt.state[a][key]),
                                       torch.as_tensor(ref.state[b][key]), rtol=1e-6, atol=1e-7)


def test_compiled_step_refuses_a_bad_option():
    # The checks are traced with the step: a compiled step given a bad lr refuses it (under
    # fullgraph Dynamo reports our ValueError as its own error, naming it) and changes nothing.
    import torch._dynamo

    torch._dynamo.reset()
    params = _params()
    _grads(params)
    opt = MAKERS["sgd"](params, backend="torch")
    step = torch.compile(opt.step, fullgraph=True, backend="aot_eager")
    step()
    snap = _snapshot(params, opt)
    opt.param_groups[0]["lr"] = -1.0
    with pytest.raises(Exception, match="lr must be a finite number"):
        step()
    _assert_unchanged(params, opt, snap)
