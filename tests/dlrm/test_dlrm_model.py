"""The optimized DLRM against the reference port on the same weights: forward, loss, and one
SGD step (fused table update against the reference's sparse SGD with coalesced gradients),
with duplicate ids in a batch; and the fused Linear+ReLU against F.relu(F.linear)."""
import pytest
import torch
import torch.nn.functional as F

from mlperf_fast.workloads.dlrm.model import DLRM, MLP, DLRMLoss
from mlperf_fast.workloads.dlrm.reference import ReferenceDLRM, reference_inputs, reference_step

SIZES = [7, 1, 30, 4, 100, 2]  # tiny tables: many duplicate ids per batch
DIM = 8

# dtype -> (forward/loss tolerance, weights-after-step tolerance): float64 is exact up to the
# summation order of the kernels; float32 differs by its rounding over K <= 64 terms
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (2e-6, 5e-6)}


def _pair(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    ref = ReferenceDLRM(SIZES, DIM, [16, DIM], [32, 16, 1], generator=g).to(dtype)
    fast = DLRM(SIZES, DIM, [16, DIM], [32, 16, 1], dtype=dtype)
    fast.load_reference(ref)
    return ref, fast


def _batch(B, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    dense = torch.log(torch.randint(0, 1000, (B, 13), generator=g).to(dtype) + 1)
    sparse = torch.stack([torch.randint(0, n, (B,), generator=g) for n in SIZES], 1)
    labels = (torch.rand(B, generator=g) < 0.3).to(dtype)
    return dense, sparse, labels


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("B", [1, 5, 64])
def test_forward_and_loss(dtype, B):
    ref, fast = _pair(dtype)
    dense, sparse, labels = _batch(B, dtype)
    tol = TOL[dtype][0]
    with torch.no_grad():
        p = ref(dense, *reference_inputs(sparse)).view(-1)
        logits = fast(dense, sparse)
        torch.testing.assert_close(torch.sigmoid(logits), p, rtol=tol, atol=tol)
        loss_ref = F.binary_cross_entropy(p, labels)
        loss = DLRMLoss(fast)(dense, sparse, labels)
        torch.testing.assert_close(loss, loss_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_one_sgd_step(dtype):
    lr = 0.5
    ref, fast = _pair(dtype, seed=3)
    dense, sparse, labels = _batch(64, dtype, seed=4)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=lr)
    reference_step(ref, opt_ref, dense, sparse, labels)

    fast.embedding.lr = lr
    opt = torch.optim.SGD(fast.dense_parameters(), lr=lr)
    opt.zero_grad()
    DLRMLoss(fast)(dense, sparse, labels).backward()
    opt.step()
    assert fast.embedding.weight.grad is None  # the update happened inside the backward

    tol = TOL[dtype][1]
    for t, (mine, bag) in enumerate(zip(fast.embedding.split_embedding_weights(), ref.emb_l)):
        torch.testing.assert_close(mine, bag.weight.detach(), rtol=tol, atol=tol,
                                   msg=lambda m, t=t: f"table {t}: {m}")
    theirs = [m for m in [*ref.bot_l, *ref.top_l] if isinstance(m, torch.nn.Linear)]
    for a, b in zip([*fast.bottom.layers, *fast.top.layers], theirs):
        torch.testing.assert_close(a.weight, b.weight, rtol=tol, atol=tol)
        torch.testing.assert_close(a.bias, b.bias, rtol=tol, atol=tol)
    # and the step really changed something in both models
    untouched = _pair(dtype, seed=3)[0]
    assert not torch.equal(untouched.emb_l[4].weight, ref.emb_l[4].weight)


@pytest.mark.parametrize("shape", [(1, 3), (17, 5), (64, 33)])
def test_linear_relu_matches_torch(shape):
    g = torch.Generator().manual_seed(shape[0])
    mlp = MLP([shape[1], 9, 4], logits=False).double()
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    y = mlp(x)
    want = F.relu(mlp.layers[1](F.relu(mlp.layers[0](x))))
    torch.testing.assert_close(y, want)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(y, [x, *mlp.parameters()], gy)
    exp = torch.autograd.grad(want, [x, *mlp.parameters()], gy)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)


def test_bad_shapes():
    with pytest.raises(ValueError, match="embedding dim"):
        DLRM(SIZES, DIM, [16, 4], [8, 1])
    with pytest.raises(ValueError, match="embedding dim"):
        ReferenceDLRM(SIZES, DIM, [16, 4], [8, 1])


@pytest.mark.cuda
@pytest.mark.parametrize("B", [1, 300, 4096])
def test_cuda_step_matches_reference_on_cuda(B):
    """On the GPU: the native TBE, the dot-interaction kernel and the cuBLASLt epilogue against
    the reference on the same GPU (float32; TF32 off, torch's default for float32 matmuls)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    lr = 0.5
    ref, fast = _pair(torch.float64, seed=5)
    ref, fast = ref.float().cuda(), fast.float().cuda()
    dense, sparse, labels = (t.cuda() for t in _batch(B, torch.float32, seed=6))
    with torch.no_grad():
        p = ref(dense, *reference_inputs(sparse)).view(-1)
        torch.testing.assert_close(torch.sigmoid(fast(dense, sparse)), p, rtol=1e-5, atol=1e-6)
    reference_step(ref, torch.optim.SGD(ref.parameters(), lr=lr), dense, sparse, labels)
    fast.embedding.lr = lr
    opt = torch.optim.SGD(fast.dense_parameters(), lr=lr)
    DLRMLoss(fast)(dense, sparse, labels).backward()
    opt.step()
    for mine, bag in zip(fast.embedding.split_embedding_weights(), ref.emb_l):
        torch.testing.assert_close(mine, bag.weight.detach(), rtol=1e-5, atol=1e-5)
    theirs = [m for m in [*ref.bot_l, *ref.top_l] if isinstance(m, torch.nn.Linear)]
    for a, b in zip([*fast.bottom.layers, *fast.top.layers], theirs):
        torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-5)
