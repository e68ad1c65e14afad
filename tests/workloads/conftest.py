"""Tiny Hugging Face model directories (built offline from configs) and a data file for ``hf:`` tests."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """``{"gpt": dir, "bert": dir, "text": file, "jsonl": file}``; the paths hold spaces."""
    from autocomp.testing.hf_dirs import sample_text, save_tiny_model

    root = tmp_path_factory.mktemp("hf models")
    text = root / "train data.txt"
    text.write_text(sample_text())
    jsonl = root / "data.jsonl"
    paras = [p for p in sample_text().split("\n\n") if p.strip()]
    jsonl.write_text("\n".join(json.dumps({"text": p, "id": i}) for i, p in enumerate(paras)) + "\n")
    return {"gpt": save_tiny_model(root / "tiny gpt", "causal-lm"), "bert": save_tiny_model(root / "tiny bert", "encoder"),
            "text": text, "jsonl": jsonl}
