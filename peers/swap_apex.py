"""apex's FusedAdam, FusedSGD, FusedLAMB and its contrib TransducerJoint / TransducerLoss replaced by
mlperf_fast's optimizers and ops.

apex's tests import ``apex`` from the checkout when it is not installed (its Python parts need no
build). Where apex's compiled ``amp_C`` is missing, a stand-in whose ``multi_tensor_l2norm`` is
mlperf_fast's is installed first, because the tests' own LAMB reference (``RefLAMB``) calls it.
``apex.contrib.transducer`` needs apex's CUDA modules to import; it is replaced by a module that
holds the adapters below and still finds the tests' reference, ``_transducer_ref``, in apex.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch
from patching import replace


def prepare(source: str) -> None:
    """Make ``import apex`` work: the installed apex if there is one, else the checkout's."""
    if importlib.util.find_spec("apex") is None and source:
        sys.path.insert(0, source)


def _amp_c_standin() -> types.ModuleType:
    from mlperf_fast.ops import multi_tensor_l2norm

    module = types.ModuleType("amp_C")
    module.__doc__ = "mlperf_fast's multi_tensor_l2norm with amp_C's calling convention"

    def l2norm(chunk_size, noop_flag, tensor_lists, per_tensor, *args):
        total, norms = multi_tensor_l2norm(tensor_lists[0], bool(per_tensor))
        return total.reshape(1), norms

    def unavailable(*args, **kwargs):
        raise NotImplementedError("only amp_C.multi_tensor_l2norm has a stand-in")

    module.multi_tensor_l2norm = l2norm
    # RefLAMB looks this one up without calling it.
    module.multi_tensor_lamb = unavailable
    return module


class TransducerJoint(torch.nn.Module):
    """apex.contrib.transducer.TransducerJoint's interface over mlperf_fast.ops.transducer_joint.

    apex's ``g_len`` counts the prediction rows (U_b + 1); ours takes the target length U_b.
    ``relu=False`` is passed on as ``activation=None``, which our joint refuses (it always applies
    the ReLU of the RNN-T joint network)."""

    def __init__(self, pack_output=False, relu=False, dropout=False, opt=1, fwd_tile_size=4,
                 dropout_prob=0, probe_mask=False):
        super().__init__()
        self.pack_output, self.relu, self.dropout = pack_output, relu, dropout
        self.dropout_prob = dropout_prob
        # Our joint does not hand its ReLU/dropout mask out; apex's tests read it only for dropout.
        self.mask_probe = [] if (relu or dropout) and probe_mask else None

    def forward(self, f, g, f_len, g_len, batch_offset=None, packed_batch=0):
        from mlperf_fast.ops import transducer_joint

        drop = self.dropout_prob if self.dropout and self.training else 0.0
        rows = int(packed_batch) if self.pack_output and packed_batch else None
        out, _ = transducer_joint(f, g, f_len, g_len - 1, activation="relu" if self.relu else None,
                                  dropout=drop, pack_output=self.pack_output, packed_rows=rows)
        return out


class TransducerLoss(torch.nn.Module):
    """apex.contrib.transducer.TransducerLoss's interface over mlperf_fast.ops.rnnt_loss (dense
    input) and rnnt_loss_packed (``packed_input=True``): per-utterance losses, no reduction.
    ``fuse_softmax_backward`` and ``opt`` choose among apex's kernels; ours has one path."""

    def __init__(self, fuse_softmax_backward=True, opt=1, packed_input=False):
        super().__init__()
        self.packed_input = packed_input

    def forward(self, x, label, f_len, y_len, blank_idx, batch_offset=None, max_f_len=None,
                debug_list=None):
        from mlperf_fast.ops import rnnt_loss, rnnt_loss_packed

        if self.packed_input:
            return rnnt_loss_packed(x, label, f_len, y_len, batch_offsets=batch_offset,
                                    blank=blank_idx, reduction="none")
        return rnnt_loss(x, label, f_len, y_len, blank=blank_idx, reduction="none")


def install() -> list[str]:
    if importlib.util.find_spec("amp_C") is None:
        sys.modules["amp_C"] = _amp_c_standin()
    import apex
    import apex.contrib
    import apex.optimizers

    from mlperf_fast import optim

    done = []
    for name in ("FusedAdam", "FusedSGD", "FusedLAMB"):
        module = importlib.import_module(f"apex.optimizers.{_file(name)}")
        done += replace(getattr(optim, name), apex.optimizers, module, name=name)

    transducer = types.ModuleType("apex.contrib.transducer")
    transducer.__path__ = [os.path.join(os.path.dirname(apex.contrib.__file__), "transducer")]
    transducer.TransducerJoint, transducer.TransducerLoss = TransducerJoint, TransducerLoss
    sys.modules["apex.contrib.transducer"] = transducer
    apex.contrib.transducer = transducer
    done += ["apex.contrib.transducer.TransducerJoint", "apex.contrib.transducer.TransducerLoss"]
    return done


def _file(name: str) -> str:
    return {"FusedAdam": "fused_adam", "FusedSGD": "fused_sgd", "FusedLAMB": "fused_lamb"}[name]


# Known differences (peers/README.md, "apex"): node id pattern, failure text pattern, label.
KNOWN = [
    (r"test_transducer_loss_fp16", r"Tensor-likes are not close",
     "float16 reference"),
    (r"test_transducer_joint(_vec)?(_pack)?$", r"activation must be one of",
     "joint is ReLU-only"),
    (r"test_transducer_joint_vec_relu$", r"test_transducer_joint.py:121",
     "padding value"),
]
