"""BERT's packed-layout attention: FlashAttention's varlen kernel (GPU) against the padded-buffer
SDPA path and a float32 per-sequence softmax, and the whole model with the flash path and the
Triton fused ops against the padded path with the torch ops; the choices' refusals on the CPU.

Tolerances (bf16 inputs, each implementation accumulating in float32): the output is a convex
combination of bf16 values of O(1), rounded once to bf16 (2^-8 relative) after probabilities
that flash rounds to bf16 before the second GEMM: 2e-2 absolute covers both with a margin. The
gradients go through two more bf16 roundings (dO and dS): 2e-2 of the largest reference
gradient. The models (2 layers, eval, bf16 autocast) differ by bf16 roundings in another order:
the logits to 6% of their spread and the loss to 0.5%, as test_bert_model's bf16 test bounds
the padded model against the float32 port.
"""
from __future__ import annotations

import pytest
import torch

from mlperf_fast.workloads.bert.model import BertForPreTraining, Varlen, varlen_attention
from mlperf_fast.workloads.bert.reference import BertModelConfig

SMALL = BertModelConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=256, max_position_embeddings=512)


def _per_sequence(q, k, v, cu, scale):
    """Attention of each sequence on its own, in float32."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        s = torch.einsum("qhd,khd->hqk", q[a:b].float(), k[a:b].float()) * scale
        out[a:b] = torch.einsum("hqk,khd->qhd", s.softmax(-1), v[a:b].float())
    return out


def _packed(lens, heads, d, device, dtype, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32,
                      device=device)
    qkv = torch.randn(int(cu[-1]), 3, heads, d, device=device, generator=g).to(dtype)
    return qkv, Varlen.build(cu, max(lens))


def test_choices_are_checked():
    qkv, varlen = _packed([3, 5], 2, 8, "cpu", torch.float32)
    q, k, v = qkv.unbind(1)
    with pytest.raises(ValueError, match="impl must be one of"):
        varlen_attention(q, k, v, varlen, impl="fast")
    with pytest.raises(ValueError, match="CUDA device of capability"):
        varlen_attention(q, k, v, varlen, impl="flash")
    # auto takes the padded buffer where flash cannot run
    torch.testing.assert_close(varlen_attention(q, k, v, varlen),
                               varlen_attention(q, k, v, varlen, impl="padded"))
    with pytest.raises(ValueError, match="attention must be one of"):
        BertForPreTraining(SMALL, attention="sdpa")
    for bad in ("cuda", "native"):
        with pytest.raises(ValueError, match="op_backend must be one of"):
            BertForPreTraining(SMALL, op_backend=bad)


@pytest.mark.cuda
@pytest.mark.parametrize("lens", [[5, 1, 300, 77, 512], [1], [128] * 6], ids=str)
def test_flash_varlen_is_attention_within_each_sequence(lens):
    qkv, varlen = _packed(lens, 16, 64, "cuda", torch.bfloat16)
    qkv.requires_grad_(True)
    scale = 64 ** -0.5
    q, k, v = qkv.unbind(1)
    want = _per_sequence(q, k, v, varlen.cu_seqlens, scale)
    g = torch.randn(want.shape, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    (want_grad,) = torch.autograd.grad(want, qkv, g)
    for impl in ("flash", "padded"):
        out = varlen_attention(q, k, v, varlen, impl=impl)
        assert out.dtype == torch.bfloat16 and out.shape == q.shape
        torch.testing.assert_close(out.float(), want, rtol=0, atol=2e-2, msg=impl)
        (grad,) = torch.autograd.grad(out, qkv, g.bfloat16())
        err = float((grad.float() - want_grad).abs().max())
        assert err <= 2e-2 * float(want_grad.abs().max()), (impl, err)


@pytest.mark.cuda
def test_flash_varlen_dropout_is_inverted_dropout_drawn_per_call():
    qkv, varlen = _packed([64, 40, 64], 4, 64, "cuda", torch.bfloat16)
    q, k, v = qkv.unbind(1)
    exact = varlen_attention(q, k, v, varlen, impl="flash").float()
    torch.manual_seed(3)
    a = varlen_attention(q, k, v, varlen, 0.1, impl="flash")
    torch.manual_seed(3)
    b = varlen_attention(q, k, v, varlen, 0.1, impl="flash")
    assert torch.equal(a, b) and not torch.equal(a.float(), exact)
    # E[dropout(P) V] = P V: the mean of n draws is within a few sigma of the exact output
    # (per element sigma ~ sqrt(p / (1 - p)) * rms(v) / sqrt(L) / sqrt(n) ~ 3e-3 here)
    n = 256
    mean = sum(varlen_attention(q, k, v, varlen, 0.1, impl="flash").float()
               for _ in range(n)) / n
    assert float((mean - exact).abs().max()) < 3e-2


@pytest.mark.cuda
def test_model_on_flash_and_triton_ops_tracks_the_padded_torch_model():
    g = torch.Generator().manual_seed(2)
    lens = [200, 37, 512, 90]
    b, s, p = len(lens), 512, 20
    mask = (torch.arange(s)[None] < torch.tensor(lens)[:, None]).long()
    pos = torch.stack([1 + torch.randperm(n - 1, generator=g)[:p].sort().values for n in lens])
    batch = {"input_ids": torch.randint(1, SMALL.vocab_size, (b, s), generator=g) * mask,
             "token_type_ids": torch.zeros(b, s, dtype=torch.long), "attention_mask": mask,
             "masked_lm_positions": pos,
             "masked_lm_ids": torch.randint(0, SMALL.vocab_size, (b, p), generator=g),
             "masked_lm_weights": torch.ones(b, p),
             "next_sentence_labels": torch.randint(0, 2, (b,), generator=g)}
    batch = {k: v.cuda() for k, v in batch.items()}
    results = {}
    for attention, ops in (("padded", "torch"), ("flash", "torch"), ("flash", "triton")):
        torch.manual_seed(0)
        model = BertForPreTraining(SMALL, unpad=True, attention=attention,
                                   op_backend=ops).cuda().eval()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch)
        out[0].backward()
        grads = torch.cat([q.grad.float().reshape(-1) for q in model.parameters()
                           if q.grad is not None])
        results[attention, ops] = (out[0].detach().float(), out[3].detach().float(), grads)
    loss, logits, grads = results["padded", "torch"]
    for key, (l2, lg2, g2) in results.items():
        assert abs(float(l2 - loss)) < 5e-3 * float(loss), key
        assert float((lg2 - logits).abs().max()) < 0.06 * float(logits.std()), key
        assert float((g2 - grads).norm()) < 3e-2 * float(grads.norm()), key
