"""RNN-T speech recognition (LibriSpeech; embedded: a synthesized English corpus)"""
