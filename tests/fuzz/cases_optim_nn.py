"""Fuzz cases of the optimizers, schedules, EMA and modules: valid calls checked against torch's
own classes (torch.optim, torch.nn.LSTM, torch.nn.EmbeddingBag), and bad ones, which must fail
with a clear error before anything changes. Each case is a module-level function (the runner
calls it by name in a child interpreter); ``CASES`` lists them with what must come of each."""
from __future__ import annotations

import copy
import math

import torch
from fuzz_runner import Case

from mlperf_fast.nn import LSTM, TableBatchedEmbeddingBag
from mlperf_fast.optim import FusedAdam, FusedAdamW, FusedLAMB, FusedLARS, FusedSGD
from mlperf_fast.optim import schedules as S
from mlperf_fast.optim.ema import EMA

CASES: list[Case] = []
NAN, INF = float("nan"), float("inf")


def _case(name: str, raises: tuple[str, ...] = (), names: tuple[str, ...] = ()):
    """Registers the decorated function as a case named ``name``."""
    def register(fn):
        fn_name = "case_" + "".join(c if c.isalnum() else "_" for c in name)
        assert fn_name not in globals(), fn_name
        globals()[fn_name] = fn
        CASES.append(Case(name, fn_name, raises, names))
        return fn
    return register


def _params(dtype=torch.float32, shapes=((4, 3), (5,), (2, 2), (3,)), seed=0):
    gen = torch.Generator(torch.get_default_device()).manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def _grads(params, seed=1):
    gen = torch.Generator(torch.get_default_device()).manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)


# -- optimizers ---------------------------------------------------------------------------------

# Each fused optimizer with a torch.optim twin of the same arithmetic (LAMB and LARS have none:
# their valid cases are checked against the package's float64 pure-PyTorch backend).
OPTS = {
    "FusedLAMB": (lambda ps, **kw: FusedLAMB(ps, **{"lr": 1e-2, **kw}), None),
    "FusedAdam": (lambda ps, **kw: FusedAdam(ps, **{"lr": 1e-2, "adam_w_mode": False, **kw}),
                  lambda ps, **kw: torch.optim.Adam(ps, **{"lr": 1e-2, **kw})),
    "FusedAdamW": (lambda ps, **kw: FusedAdamW(ps, **{"lr": 1e-2, **kw}),
                   lambda ps, **kw: torch.optim.AdamW(ps, **{"lr": 1e-2, **kw})),
    "FusedSGD": (lambda ps, **kw: FusedSGD(ps, **{"lr": 1e-2, "momentum": 0.9, **kw}),
                 lambda ps, **kw: torch.optim.SGD(ps, **{"lr": 1e-2, "momentum": 0.9, **kw})),
    "FusedLARS": (lambda ps, **kw: FusedLARS(ps, **{"lr": 1e-2, **kw}), None),
}
STATE_KEY = {"FusedLAMB": "exp_avg", "FusedAdam": "exp_avg_sq", "FusedAdamW": "exp_avg",
             "FusedSGD": "momentum_buffer", "FusedLARS": "momentum_buffer"}


def _check_against_reference(name, dtype=torch.float32, backend="auto", steps=3, **kw):
    make, twin = OPTS[name]
    ours = _params(dtype)
    if twin is not None:
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
        opt, ref = make(ours, backend=backend, **kw), twin(theirs, **kw)
    else:  # the float64 pure-PyTorch backend
        theirs = [torch.nn.Parameter(p.detach().double()) for p in ours]
        opt, ref = make(ours, backend=backend, **kw), make(theirs, backend="torch", **kw)
    for step in range(steps):
        _grads(ours, seed=step)
        for a, b in zip(ours, theirs):
            b.grad = a.grad.detach().to(b.dtype).clone()
        opt.step()
        ref.step()
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.detach().double(), b.detach().double(), rtol=tol, atol=tol), \
            f"{name}: max error {(a.detach().double() - b.detach().double()).abs().max()}"


def _unchanged_after(name, spoil):
    """Steps once, spoils something of group 1 (``spoil(params, opt)``), steps again (which must
    raise), and checks nothing changed: the error then propagates to the runner."""
    make, _ = OPTS[name]
    params = _params()
    opt = make([dict(params=params[:2]), dict(params=params[2:])])
    _grads(params)
    opt.step()
    _grads(params, seed=2)
    spoil(params, opt)
    weights = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict())
    try:
        opt.step()
    finally:
        for p, w in zip(params, weights):
            assert torch.equal(p.detach(), w), "a refused step changed a parameter"
        now = opt.state_dict()["state"]
        for pid, entry in state["state"].items():
            for key, value in entry.items():
                assert torch.equal(torch.as_tensor(now[pid][key]), torch.as_tensor(value)), \
                    f"a refused step changed state {key!r}"


for _name in OPTS:
    def _register(name=_name):
        make, _ = OPTS[name]
        # Valid.
        _case(f"{name} float32 matches reference")(lambda: _check_against_reference(name))
        _case(f"{name} float64 matches reference")(
            lambda: _check_against_reference(name, dtype=torch.float64))
        _case(f"{name} bfloat16 matches reference")(
            lambda: _check_against_reference(name, dtype=torch.bfloat16))
        _case(f"{name} torch backend matches reference")(
            lambda: _check_against_reference(name, backend="torch"))
        _case(f"{name} weight decay matches reference")(
            lambda: _check_against_reference(name, weight_decay=0.1))
        _case(f"{name} lr 0 leaves weights")(lambda: _check_against_reference(name, lr=0.0))

        @_case(f"{name} tensor lr")
        def _():
            ps = _params()
            opt = make(ps, lr=torch.tensor(1e-2))
            _grads(ps)
            opt.step()

        @_case(f"{name} no gradients is a no-op")
        def _():
            ps = _params()
            before = [p.detach().clone() for p in ps]
            make(ps).step()
            assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))

        @_case(f"{name} empty and one-element tensors")
        def _():
            ps = _params(shapes=((0,), (1,), (7, 0, 2)))
            _grads(ps)
            make(ps).step()

        @_case(f"{name} state_dict round trip")
        def _():
            ps = _params()
            opt = make(ps)
            _grads(ps)
            opt.step()
            opt2 = make(ps)
            opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
            opt2.step()

        @_case(f"{name} GradScaler skips inf")
        def _():
            ps = _params()
            opt = make(ps)
            scaler = torch.amp.GradScaler(torch.get_default_device().type, init_scale=4.0)
            before = [p.detach().clone() for p in ps]
            scaler.scale(sum((p * INF).sum() for p in ps)).backward()
            scaler.step(opt)
            assert all(torch.equal(p.detach(), b) for p, b in zip(ps, before))

        # Invalid options.
        bad = [("lr", -1e-3), ("lr", NAN), ("lr", INF), ("weight_decay", -1.0),
               ("weight_decay", NAN)]
        if name in ("FusedLAMB", "FusedAdam", "FusedAdamW"):
            bad += [("eps", -1e-8), ("eps", NAN), ("betas", (1.0, 0.9)), ("betas", (0.9, NAN)),
                    ("betas", (0.9, -0.5))]
        if name in ("FusedSGD", "FusedLARS"):
            bad += [("momentum", -0.1), ("momentum", NAN)]
        if name == "FusedLARS":
            bad += [("trust_coefficient", 0.0), ("eps", -1.0)]
        for key, value in bad:
            _case(f"{name} {key}={value!r}", ("ValueError",), (key,))(
                lambda key=key, value=value: make(_params(), **{key: value}))
        _case(f"{name} lr as a string", ("TypeError",), ("lr",))(
            lambda: make(_params(), lr="0.1"))
        _case(f"{name} two-element tensor lr", ("ValueError",), ("lr",))(
            lambda: make(_params(), lr=torch.tensor([0.1, 0.2])))
        _case(f"{name} meta tensor lr", ("ValueError",), ("lr", "meta"))(
            lambda: make(_params(), lr=torch.tensor(0.1, device="meta")))

        @_case(f"{name} bad group added later", ("ValueError",), ("param group 1", "lr"))
        def _():
            ps = _params()
            opt = make(ps[:2])
            try:
                opt.add_param_group(dict(params=ps[2:], lr=-1.0))
            finally:
                assert len(opt.param_groups) == 1, "the refused group was kept"

        # Duplicates.
        _case(f"{name} parameter twice in a group", ("ValueError",), ("twice",))(
            lambda: make([_params()[0]] * 2))

        @_case(f"{name} parameter in two groups", ("ValueError",), ("more than one",))
        def _():
            p = _params()[0]
            make([dict(params=[p]), dict(params=[p])])

        # Bad second group: nothing may change.
        def set_group(key, value):
            def spoil(ps, opt):
                opt.param_groups[1][key] = value
            return spoil

        _case(f"{name} group 1 lr NaN changes nothing", ("ValueError",), ("group 1", "lr"))(
            lambda: _unchanged_after(name, set_group("lr", NAN)))
        _case(f"{name} group 1 weight_decay -1 changes nothing", ("ValueError",),
              ("group 1", "weight_decay"))(
            lambda: _unchanged_after(name, set_group("weight_decay", -1.0)))

        def state_shape(ps, opt):
            opt.state[ps[3]][STATE_KEY[name]] = torch.zeros(9)

        def duplicate(ps, opt):
            opt.param_groups[1]["params"].append(ps[0])

        def grad_dtype(ps, opt):
            ps[3].grad.data = ps[3].grad.data.double()

        def grad_layout(ps, opt):
            ps[2].grad = ps[2].grad.t()  # non-contiguous

        def grad_sparse(ps, opt):
            ps[3].grad = ps[3].grad.to_sparse()

        def meta_scale(ps, opt):
            opt.grad_scale = torch.ones((), device="meta")

        def meta_inf(ps, opt):
            opt.found_inf = torch.zeros((), device="meta")

        def scale_shape(ps, opt):
            opt.grad_scale = torch.ones(3)

        for label, spoil, raises, names in (
                ("state of another shape", state_shape, ("ValueError",), ("shape",)),
                ("parameter listed again", duplicate, ("ValueError",), ("param groups 0 and 1",)),
                ("gradient of another dtype", grad_dtype, ("TypeError",), ("dtype",)),
                ("non-contiguous gradient", grad_layout, ("ValueError",), ("contiguous",)),
                ("sparse gradient", grad_sparse, ("ValueError",), ("sparse",)),
                ("meta grad_scale", meta_scale, ("ValueError",), ("grad_scale", "meta")),
                ("meta found_inf", meta_inf, ("ValueError",), ("found_inf", "meta")),
                ("three-element grad_scale", scale_shape, ("ValueError",), ("grad_scale",))):
            _case(f"{name} {label} changes nothing", raises, names)(
                lambda spoil=spoil: _unchanged_after(name, spoil))

        @_case(f"{name} meta parameters", ("ValueError",), ("meta",))
        def _():
            p = torch.nn.Parameter(torch.ones(3, device="meta"))
            p.grad = torch.ones(3, device="meta")
            make([p]).step()

        @_case(f"{name} float16 gradient for float32 parameter", ("TypeError",), ("dtype",))
        def _():
            ps = _params()
            _grads(ps)
            ps[0].grad.data = ps[0].grad.data.half()
            make(ps).step()

        @_case(f"{name} integer parameter", ("TypeError",), ("dtype",))
        def _():
            p = torch.nn.Parameter(torch.ones(3), requires_grad=False)
            p.data = torch.ones(3, dtype=torch.int64)
            p.grad = torch.ones(3, dtype=torch.int64)
            make([p]).step()

        # load_state_dict.
        def loaded(spoil):
            ps = _params()
            opt = make(ps)
            _grads(ps)
            opt.step()
            sd = copy.deepcopy(opt.state_dict())
            spoil(sd)
            before = copy.deepcopy(opt.state_dict())
            try:
                opt.load_state_dict(sd)
            finally:
                now = opt.state_dict()
                for pid, entry in before["state"].items():
                    for key, value in entry.items():
                        assert torch.equal(torch.as_tensor(now["state"][pid][key]),
                                           torch.as_tensor(value)), "a refused load changed state"

        def reshape(sd):
            sd["state"][0][STATE_KEY[name]] = torch.zeros(5)

        def retype(sd):
            sd["state"][1][STATE_KEY[name]] = torch.zeros(5, dtype=torch.int64)

        def stranger(sd):
            sd["state"][42] = {"step": torch.tensor(1.0)}

        def no_state(sd):
            del sd["state"]

        def bad_group_lr(sd):
            sd["param_groups"][0]["lr"] = -1.0

        def extra_group(sd):
            sd["param_groups"].append(dict(sd["param_groups"][0], params=[]))

        for label, spoil, raises, names in (
                ("state of another shape", reshape, ("ValueError",), ("shape",)),
                ("integer state", retype, ("TypeError",), ("dtype",)),
                ("state of an unknown parameter", stranger, ("ValueError",), ("42",)),
                ("no 'state' key", no_state, ("ValueError",), ("state",)),
                ("saved lr -1", bad_group_lr, ("ValueError",), ("lr",)),
                ("one group more", extra_group, ("ValueError",), ("param groups",))):
            _case(f"{name} load_state_dict: {label}", raises, names)(
                lambda spoil=spoil: loaded(spoil))

    _register()


@_case("FusedSGD float16 matches torch.optim.SGD and its state")
def _():
    ours = _params(torch.float16)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    opt = FusedSGD(ours, lr=0.05, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(theirs, lr=0.05, momentum=0.9, nesterov=True)
    for step in range(5):
        _grads(ours, seed=step)
        for a, b in zip(ours, theirs):
            b.grad = a.grad.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.detach().float(), b.detach().float(), rtol=5e-3, atol=5e-3)
        assert "master_param" not in opt.state[a]
        assert opt.state[a]["momentum_buffer"].dtype == torch.float16


@_case("FusedLAMB max_grad_norm NaN", ("ValueError",), ("max_grad_norm",))
def _():
    FusedLAMB(_params(), max_grad_norm=NAN)


@_case("FusedLAMB amsgrad", ("ValueError",), ("amsgrad",))
def _():
    FusedLAMB(_params(), amsgrad=True)


@_case("FusedSGD nesterov without momentum", ("ValueError",), ("nesterov",))
def _():
    FusedSGD(_params(), momentum=0.0, nesterov=True)


@_case("FusedSGD unknown backend", ("ValueError",), ("backend",))
def _():
    FusedSGD(_params(), backend="cuda")


@_case("FusedAdam empty parameter list", ("ValueError",), ("empty",))
def _():
    FusedAdam([])


# -- schedules and EMA --------------------------------------------------------------------------

@_case("schedules: every schedule at its boundaries")
def _():
    assert S.bert_poly_warmup(0, 1.0, 100, 10) == 0.0
    assert math.isclose(S.bert_poly_warmup(10, 1.0, 100, 10), 0.9)
    assert math.isclose(S.resnet_poly_warmup(20, 10.0, 10, 100, 2), 10.0)
    assert math.isclose(S.dlrm_warmup_hold_decay(5, 4.0, 4, 10, 5), 3.0)
    assert math.isclose(S.maskrcnn_warmup_multistep(60000, 0.02, (60000,)), 0.002)
    assert math.isclose(S.ssd_warmup_multistep(30, 1.0, 100, 30), 29 / 30)
    assert S.retinanet_warmup_factor(100, 100) == 1.0


for _label, _call, _names in (
        ("bert NaN base_lr", lambda: S.bert_poly_warmup(1, NAN, 10, 1), ("base_lr",)),
        ("bert negative step", lambda: S.bert_poly_warmup(-1, 1.0, 10, 1), ("step",)),
        ("bert 0 train steps", lambda: S.bert_poly_warmup(1, 1.0, 0, 1), ("num_train_steps",)),
        ("resnet float step", lambda: S.resnet_poly_warmup(1.5, 1.0, 10, 10, 1), ("step",)),
        ("resnet NaN warmup", lambda: S.resnet_poly_warmup(1, 1.0, 10, 10, NAN),
         ("warmup_epochs",)),
        ("resnet train < warmup", lambda: S.resnet_poly_warmup(1, 1.0, 10, 5, 2),
         ("train_steps",)),
        ("dlrm decay before warmup", lambda: S.dlrm_warmup_hold_decay(1, 1.0, 10, 5, 5),
         ("decay_start_step",)),
        ("maskrcnn bad method", lambda: S.maskrcnn_warmup_multistep(1, 1.0, (5,),
                                                                    warmup_method="exp"),
         ("warmup_method",)),
        ("maskrcnn unsorted milestones", lambda: S.maskrcnn_warmup_multistep(1, 1.0, (5, 2)),
         ("milestones",)),
        ("ssd 0 steps per epoch", lambda: S.ssd_warmup_multistep(1, 1.0, 0, 10),
         ("steps_per_epoch",)),
        ("retinanet inf factor", lambda: S.retinanet_warmup_factor(1, 10, INF),
         ("warmup_factor",)),
        ("warmup_hold_exp_decay", lambda: S.warmup_hold_exp_decay(1, 1, 10, 1, 1, 0.5), ())):
    _case(f"schedules: {_label}", ("ValueError",) if _names else (), _names)(_call)


@_case("LRSchedule follows a rate function", ())
def _():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = FusedSGD([p], lr=0.1)
    sched = S.LRSchedule(opt, lambda n, base: base * S.retinanet_warmup_factor(n, 4))
    for n in range(6):
        assert math.isclose(opt.param_groups[0]["lr"], 0.1 * S.retinanet_warmup_factor(n, 4))
        sched.step()


_case("LRSchedule non-callable", ("TypeError",), ("lr_at",))(
    lambda: S.LRSchedule(FusedSGD(_params(), lr=0.1), 0.5))


@_case("EMA averages")
def _():
    m = torch.nn.Linear(3, 2)
    ema = EMA(m, 0.5)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update()
    assert torch.allclose(ema.module.weight, m.weight - 0.5)


for _label, _decay, _raises in (("NaN", NAN, "ValueError"), ("1.0", 1.0, "ValueError"),
                                ("-0.1", -0.1, "ValueError"), ("a string", "0.9", "TypeError")):
    _case(f"EMA decay {_label}", (_raises,), ("decay",))(
        lambda d=_decay: EMA(torch.nn.Linear(2, 2), d))
_case("EMA of a non-module", ("TypeError",), ("model",))(lambda: EMA(3, 0.5))
_case("EMA load of a foreign dict", ("ValueError",), ("module",))(
    lambda: EMA(torch.nn.Linear(2, 2), 0.5).load_state_dict({"decay": 0.5}))


# -- nn.LSTM ------------------------------------------------------------------------------------

def _lstm_pair(impl="auto", **kw):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 5, 2, **kw)
    ours = LSTM(4, 5, 2, impl=impl, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _lstm_same(impl, x, hx=None, **kw):
    ref, ours = _lstm_pair(impl, **kw)
    args = (x,) if hx is None else (x, hx)
    with torch.no_grad():
        (y_r, (h_r, c_r)), (y, (h, c)) = ref(*args), ours(*args)
    for a, b in ((y, y_r), (h, h_r), (c, c_r)):
        assert a.shape == b.shape, f"shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), f"max error {(a - b).abs().max()}"


for _impl in ("auto", "fused", "cudnn"):
    for _label, _x, _hx, _kw in (
            ("batched", (6, 3, 4), None, {}),
            ("batch_first", (3, 6, 4), None, dict(batch_first=True)),
            ("unbatched", (6, 4), None, {}),
            ("unbatched batch_first", (6, 4), None, dict(batch_first=True)),
            ("unbatched with hx", (6, 4), ((2, 5), (2, 5)), {}),
            ("with hx", (6, 3, 4), ((2, 3, 5), (2, 3, 5)), {}),
            ("bidirectional", (6, 3, 4), None, dict(bidirectional=True)),
            ("one step", (1, 2, 4), None, {}),
            ("batch 0", (6, 0, 4), None, {})):
        def _make(impl=_impl, x=_x, hx=_hx, kw=_kw):
            gen = torch.Generator(torch.get_default_device()).manual_seed(1)
            h = None if hx is None else tuple(torch.randn(s, generator=gen) for s in hx)
            _lstm_same(impl, torch.randn(x, generator=gen), h, **kw)
        _case(f"LSTM {_impl} {_label} matches torch.nn.LSTM")(_make)

    for _label, _hx, _names in (
            ("hx batch smaller than the input's", ((2, 1, 5), (2, 1, 5)), ("h_0",)),
            ("hx batch larger", ((2, 7, 5), (2, 7, 5)), ("h_0",)),
            ("hx hidden size", ((2, 3, 6), (2, 3, 6)), ("h_0",)),
            ("hx layer count", ((1, 3, 5), (1, 3, 5)), ("h_0",)),
            ("cx hidden size", ((2, 3, 5), (2, 3, 4)), ("c_0",)),
            ("2-D hx for batched input", ((2, 5), (2, 5)), ("3-D",))):
        _case(f"LSTM {_impl} {_label}", ("RuntimeError", "ValueError"), _names)(
            lambda impl=_impl, hx=_hx: LSTM(4, 5, 2, impl=impl)(
                torch.randn(6, 3, 4), tuple(torch.zeros(s) for s in hx)))
    _case(f"LSTM {_impl} hx dtype", ("RuntimeError", "TypeError"), ("dtype",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(
            torch.randn(6, 3, 4), (torch.zeros(2, 3, 5).double(), torch.zeros(2, 3, 5).double())))
    _case(f"LSTM {_impl} hx on meta", ("RuntimeError", "ValueError"), ("meta",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(
            torch.randn(6, 3, 4), (torch.zeros(2, 3, 5, device="meta"),) * 2))
    _case(f"LSTM {_impl} input features", ("RuntimeError", "ValueError"), ("features",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(torch.randn(6, 3, 3)))
    _case(f"LSTM {_impl} input float64", ("ValueError", "TypeError"), ("dtype",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(torch.randn(6, 3, 4).double()))
    _case(f"LSTM {_impl} sequence length 0", ("RuntimeError", "ValueError"), ("length 0",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(torch.randn(0, 3, 4)))
    _case(f"LSTM {_impl} 4-D input", ("ValueError",), ("3-D",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(torch.randn(6, 3, 4, 1)))
    _case(f"LSTM {_impl} hx not a pair", ("RuntimeError", "TypeError"), ("tuple",))(
        lambda impl=_impl: LSTM(4, 5, 2, impl=impl)(torch.randn(6, 3, 4), torch.zeros(2, 3, 5)))

_case("LSTM proj_size matches torch.nn.LSTM")(
    lambda: _lstm_same("auto", torch.randn(6, 3, 4), proj_size=2))
for _label, _kw, _names in (("proj_size >= hidden", dict(proj_size=5), ("proj_size",)),
                            ("dropout 2", dict(dropout=2.0), ("dropout",)),
                            ("dropout NaN", dict(dropout=NAN), ("dropout",)),
                            ("0 layers", dict(num_layers=0), ("num_layers",)),
                            ("fused with a projection", dict(proj_size=2, impl="fused"),
                             ("proj_size",)),
                            ("unknown impl", dict(impl="cuda"), ("impl",))):
    _case(f"LSTM {_label}", ("ValueError",), _names)(lambda kw=_kw: LSTM(4, 5, **kw))
_case("LSTM PackedSequence", ("TypeError",), ("PackedSequence",))(
    lambda: LSTM(4, 5)(torch.nn.utils.rnn.pack_sequence([torch.randn(3, 4)])))


# -- TableBatchedEmbeddingBag -------------------------------------------------------------------

def _tbe_and_bags():
    torch.manual_seed(0)
    bags = [torch.nn.EmbeddingBag(n, 3, mode="sum") for n in (10, 6)]
    return TableBatchedEmbeddingBag.from_embedding_bags(bags), bags


@_case("TableBatchedEmbeddingBag lists match nn.EmbeddingBag")
def _():
    m, bags = _tbe_and_bags()
    idx = [torch.tensor([1, 2, 9], dtype=torch.int32), torch.tensor([5, 0])]
    off = [torch.tensor([0, 2]), torch.tensor([0, 0], dtype=torch.int32)]
    for out, bag, i, o in zip(m(idx, off), bags, idx, off):
        assert torch.allclose(out, bag(i.long(), o.long()), atol=1e-6)


for _label, _idx, _off, _raises, _names in (
        ("int64 offset past 2^32 with int32 indices", [[1, 2], [3]], [[0, 2 ** 32], [0, 1]],
         "ValueError", ("table 0", "offsets")),
        ("offset into the next table", [[1, 2], [3]], [[0, 1], [0, 2]], "ValueError",
         ("table 1", "offsets")),
        ("first offset not 0", [[1, 2], [3]], [[1, 1], [0, 1]], "ValueError", ("offsets[0]",)),
        ("decreasing offsets", [[1, 2, 3], [3]], [[0, 2, 1], [0, 1, 1]], "ValueError",
         ("nondecreasing",)),
        ("index past its table", [[10], [0]], [[0], [0]], "ValueError", ("10",)),
        ("negative index", [[-1], [0]], [[0], [0]], "ValueError", ("-1",))):
    def _make(idx=_idx, off=_off):
        m, _ = _tbe_and_bags()
        dt = [torch.int32, torch.int64]
        m([torch.tensor(i, dtype=dt[0]) for i in idx], [torch.tensor(o) for o in off])
    _case(f"TableBatchedEmbeddingBag {_label}", (_raises,), _names)(_make)

_case("TableBatchedEmbeddingBag float indices", ("TypeError",), ("indices",))(
    lambda: _tbe_and_bags()[0]([torch.tensor([1.0]), torch.tensor([1])],
                               [torch.tensor([0]), torch.tensor([0])]))
_case("TableBatchedEmbeddingBag NaN lr", ("ValueError",), ("lr",))(
    lambda: TableBatchedEmbeddingBag([3, 4], 2, optimizer="sgd", lr=NAN))
_case("TableBatchedEmbeddingBag bad mode", ("ValueError",), ("mode",))(
    lambda: TableBatchedEmbeddingBag([3, 4], 2, mode="max"))
