"""What runs on Ray: proxy tasks, the evaluator actor pool (any registered evaluator), the QAT trainable.

Nothing here writes to the study database: workers return plain values and the controller
persists them as they arrive.
"""
from __future__ import annotations
