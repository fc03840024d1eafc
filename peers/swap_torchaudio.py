"""torchaudio.functional.rnnt_loss replaced by mlperf_fast.ops.rnnt_loss, also where
torchaudio.transforms.RNNTLoss looks it up (``torchaudio.transforms._transforms``)."""
from __future__ import annotations

from patching import replace


def install() -> list[str]:
    import torchaudio.functional
    import torchaudio.functional.functional
    import torchaudio.transforms._transforms

    from mlperf_fast.ops import rnnt_loss

    return replace(rnnt_loss, torchaudio.functional, torchaudio.functional.functional,
                   torchaudio.transforms._transforms, name="rnnt_loss")


# Known differences (peers/README.md, "torchaudio"): node id pattern, failure text, label.
KNOWN = [
    (r"torchscript_consistency", r"torch\.jit|NotSupportedError", "TorchScript"),
]
