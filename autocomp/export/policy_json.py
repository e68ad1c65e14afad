"""Export format ``policy``: the policy as versioned JSON, what ``front export`` always wrote.

Example:
    >>> from autocomp.export import ExportJob
    >>> from autocomp.policy import Choice, Policy
    >>> p = Policy.from_choices({"fc": Choice(4, 8)})
    >>> job = ExportJob("s", p, {**p.to_dict(), "study": "s"})
    >>> write_policy_json(job, tmp_path / "p.json")          # doctest: +SKIP
    'wrote policy ... (1 layers)'
"""
from __future__ import annotations

import json
from pathlib import Path

from autocomp.export import ExportJob


def write_policy_json(job: ExportJob, path: Path) -> str:
    """Write ``job.policy_doc`` to ``path``; returns the summary line."""
    Path(path).write_text(json.dumps(job.policy_doc, indent=1))
    return f"wrote policy {job.policy.id} ({len(job.policy)} layers)"
