"""The metric names ``app.py eval`` and the evaluation take (standard library only, so the
command line is built without importing numpy or torch)."""

METRICS = ("fid", "kid", "cmmd", "clip", "precision_recall", "analyzer")
DEFAULT_METRICS = ("fid", "kid", "cmmd", "clip", "precision_recall")
#: Metrics that compare two sets and so need a reference folder.
NEEDS_REFERENCE = ("fid", "kid", "cmmd", "precision_recall")
