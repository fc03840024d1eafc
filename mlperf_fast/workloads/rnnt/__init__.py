"""RNN-T speech recognition (LibriSpeech; embedded: a synthesized English corpus)

Closed (--data-dir DIR): LibriSpeech unpacked so that DIR/<split>/<speaker>/<chapter>/ holds the
*.flac files and <speaker>-<chapter>.trans.txt, for train-clean-100, train-clean-360,
train-other-500 and dev-clean (or the reference's librispeech-<split>-wav.json manifests in DIR).
Target WER 0.058 on dev-clean, evaluated every epoch.

Embedded (no --data-dir): 2400 training and 240 evaluation utterances spoken by libespeak-ng
(24 training voices, 6 other voices and unseen sentences for evaluation), written in LibriSpeech's
layout into the cache ($MLPERF_FAST_CACHE or ~/.cache/mlperf_fast) and read by the same reader; a
1.6M-parameter RNN-T trains to WER 0.15 on it.
"""
