"""Quality metrics, one place each, tested against a library oracle: word error rate (wer.py)."""
