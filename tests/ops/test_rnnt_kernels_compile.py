"""The Triton kernels of the RNN-T ops compile for sm_90 (Hopper) ahead of time, without a GPU.

The interpreter runs the kernels' arithmetic on the CPU but not Triton's compiler, whose type
and layout rules are stricter; this compiles every kernel variant the ops launch to a cubin, in a
subprocess without TRITON_INTERPRET, so a compile error shows here rather than first on a GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import triton
    from triton.compiler import ASTSource
    from triton.backends.compiler import GPUTarget
    from mlperf_fast.kernels import lstm_cell as L, rnnt_loss as R, transducer_joint as J
    from mlperf_fast.kernels import transducer_joint_loss as M

    target = GPUTarget("cuda", 90, 32)
    failed = []

    def check(fn, sig, consts, warps=4):
        full = {n: ("constexpr" if n in consts else sig[n]) for n in fn.arg_names}
        try:
            triton.compile(ASTSource(fn=fn, signature=full, constexprs=consts), target=target,
                           options={"num_warps": warps})
        except Exception as e:  # noqa: BLE001
            failed.append(f"{fn.__name__} {consts}: {type(e).__name__}: {e}")

    f, idx = "*fp32", "*i64"
    for dt in ("*fp32", "*bf16", "*fp16"):
        for fused in (True, False):
            for packed in (False, True):
                check(R._row_stats, dict(logits=dt, targets="*i32", logit_lengths="*i32",
                      target_lengths="*i32", lse=f, lp_blank=f, lp_emit=f, row_base=idx, T="i32",
                      U1="i32", V="i32", UMAX="i32", blank="i32"),
                      dict(FUSED=fused, PACKED=packed, BLOCK_V=1024))
                for clamp in (False, True):
                    for split in (False, True) if not packed and dt == f else (False,):
                        check(R._row_grad, dict(logits=dt, grad=dt, targets="*i32",
                              logit_lengths="*i32", target_lengths="*i32", lse=f, lp_blank=f,
                              lp_emit=f, alpha=f, beta=f, log_like=f, scale=f, row_base=idx,
                              T="i32", U1="i32", V="i32", UMAX="i32", blank="i32",
                              clamp="fp32"), dict(FUSED=fused, CLAMP=clamp, PACKED=packed,
                                                  SPLIT=split, BLOCK_V=1024))
        tables = dict(row_base=idx, u_stride=idx, t_lim=idx, u_lim=idx)
        check(J._joint_fwd, dict(f=dt, g=dt, out=dt, **tables, f_bstride="i32", g_bstride="i32",
              H="i32", T="i32", U1="i32"), dict(BLOCK_H=128), 1)
        check(J._joint_bwd_f, dict(dz=dt, z=dt, df=dt, **tables, df_bstride="i32", H="i32",
              T="i32", scale="fp32"), dict(BLOCK_H=128), 1)
        check(J._joint_bwd_g, dict(dz=dt, z=dt, dg=dt, **tables, dg_bstride="i32", H="i32",
              U1="i32", scale="fp32"), dict(BLOCK_H=128), 1)
        for pre2 in (True, False):
            for save in (True, False):
                check(L._cell_fwd, dict(pre=dt, pre2=dt, c_prev=f, h_out=dt, c_out=f,
                      gates_out=dt, H="i32", pre_stride="i32", pre2_stride="i32",
                      h_stride="i32"), dict(HAS_PRE2=pre2, SAVE=save, BLOCK=512))
        check(L._cell_bwd, dict(dh=dt, dh_stride="i32", dc=f, gates=dt, c_prev=f, c=f, dpre=dt,
              dc_prev=f, H="i32"), dict(HAS_DC=True, BLOCK=512))
    for block_u in (2, 128, 1024):
        check(R._alpha_beta, dict(lp_blank=f, lp_emit=f, logit_lengths="*i32",
              target_lengths="*i32", alpha=f, beta=f, log_like=f, T="i32", U1="i32"),
              dict(BLOCK_U=block_u), max(1, min(8, block_u // 256)))
    for bias in (True, False):
        check(M._mm, dict(a=f, b=f, c=f, bias=f, M="i32", N="i32", K="i32", k_per_split="i32",
              sam="i32", sak="i32", sbk="i32", sbn="i32", scm="i32", scn="i32", scs="i32"),
              dict(HAS_BIAS=bias, PRECISION="tf32x3", BLOCK_M=128, BLOCK_N=128, BLOCK_K=32,
                   GROUP_M=8), 8)
    for lo_at in (1, 2):
        check(M._stack_tf32, dict(x=f, out=f, n="i64", cols="i32"), dict(LO_AT=lo_at, BLOCK=4096), 8)
    print("\\n".join(failed) if failed else "all compiled")
    raise SystemExit(1 if failed else 0)
''')


def test_kernels_compile_for_sm90():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=900)
    if "No module named" in proc.stderr and "triton.backends" in proc.stderr:
        pytest.skip("this Triton cannot compile ahead of time")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
