"""What runs on Ray: proxy tasks, PTQ evaluator actors, and (later) QAT/NAS trainables.

Nothing here writes to the study database: workers return plain values and the controller
persists them as they arrive.
"""
from __future__ import annotations
