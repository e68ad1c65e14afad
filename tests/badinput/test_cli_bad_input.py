"""Bad input over every command: one ``error:`` line, exit code 2, no traceback, nothing changed.

Each case runs the real ``autocomp`` entry point in-process (no Ray: every case fails before a
worker would start). A case naming ``{db}`` (the good study ``first``) also checks that the
database's rows are unchanged; a case listing ``absent`` paths checks that they were not created.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import textwrap
from pathlib import Path

import pytest

FIXTURE_DB = Path(__file__).resolve().parents[1] / "store" / "fixtures" / "pre_alembic.db"
GOOD = "first"  # the done study that pre_alembic.db holds

_WORKLOAD = """\
import torch
from autocomp.workload import Workload

def _model():
    return torch.nn.Sequential(torch.nn.Linear(4, 3))

def batches(n=8, width=4):
    return [(torch.randn(n, width), torch.zeros(n, dtype=torch.long))]
"""

# name -> body of a user factory file; each defines make() (or fails before it can)
FACTORIES = {
    "loader_raises": "def make():\n    return Workload('w', lambda: torch.load('missing.pt'), batches(), batches())\n",
    "factory_raises": "def make():\n    raise RuntimeError('no GPU here')\n",
    "factory_exits": "import sys\ndef make():\n    sys.exit(3)\n",
    "import_exits": "import sys\nsys.exit(3)\n",
    "import_raises": "raise ImportError('no module named nothing')\n",
    "syntax_error": "def make(:\n",
    "forward_fails": "def make():\n    return Workload('w', _model, batches(width=5), batches())\n",
    "empty_calib": "def make():\n    return Workload('w', _model, [], batches())\n",
    "empty_eval": "def make():\n    return Workload('w', _model, batches(), [])\n",
    "zero_batch": "def make():\n    return Workload('w', _model, batches(n=0), batches())\n",
    "not_pairs": "def make():\n    return Workload('w', _model, [torch.randn(2, 4)], batches())\n",
    "not_a_module": "def make():\n    return Workload('w', lambda: 'model', batches(), batches())\n",
    "not_a_workload": "def make():\n    return 42\n",
    "unknown_quality": "def make():\n    return Workload('w', _model, batches(), batches(), quality='bleu')\n",
}

SPACES = {
    "space_override_typo.yaml": "w_bits: [4, 8]\noverrides:\n  - match: 'conv9*'\n    w_bits: [8]\n",
    "space_tie_typo.yaml": "w_bits: [4, 8]\nties:\n  - ['nolayer', 'classifier.*']\n",
    "space_not_yaml.yaml": "w_bits: [4, 8\n",
    "space_list.yaml": "- 4\n- 8\n",
    "space_bad_bits.yaml": "w_bits: [3.3]\n",
    "space_unknown_key.yaml": "w_bits: [4]\nbits: [8]\n",
}

TABLES = {
    "table_nan.json": '{"table": {"fc": {"w8a8": NaN}}}',
    "table_inf.json": '{"table": {"fc": {"w8a8": Infinity}}}',
    "table_negative.json": '{"table": {"fc": {"w8a8": -0.001}}}',
    "table_not_json.json": "{table",
    "table_shape.json": '[1, 2, 3]',
    "table_text.json": '{"table": {"fc": {"w8a8": "fast"}}}',
}


def rows(db: Path) -> list[str]:
    """Every row of every table, as SQL (the comparison behind "the study is unchanged")."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return list(conn.iterdump())


@pytest.fixture(scope="session")
def bad(tmp_path_factory) -> dict[str, str]:
    """Paths the cases name: ``{db}`` (the good study), ``{dir}`` and every bad file."""
    from autocomp.store import Store

    d = tmp_path_factory.mktemp("badinput")
    db = d / "good.db"
    shutil.copy(FIXTURE_DB, db)
    Store(str(db)).dispose()  # migrate once: later commands only read it
    corrupt = d / "corrupt.db"
    corrupt.write_bytes(b"this is not a database " * 100)
    broken_json = d / "broken_json.db"
    shutil.copy(db, broken_json)
    with sqlite3.connect(broken_json) as conn:
        conn.execute("UPDATE autocomp_studies SET config = '{not json' WHERE name = ?", (GOOD,))
    paths = {"db": str(db), "dir": str(d), "corrupt": str(corrupt), "broken_json": str(broken_json),
             "missing_db": str(d / "typo.db"), "nodir": str(d / "no" / "such" / "dir")}
    (d / "space_latin1.yaml").write_bytes("name: caf\xe9\nw_bits: [4, 8]\n".encode("latin-1"))
    (d / "table_latin1.json").write_bytes('{"table": {"caf\xe9": {"w8a8": 1.0}}}'.encode("latin-1"))
    paths["space_latin1"] = str(d / "space_latin1.yaml")
    paths["table_latin1"] = str(d / "table_latin1.json")
    for name, text in {**SPACES, **TABLES}.items():
        (d / name).write_text(text)
        paths[name.rsplit(".", 1)[0]] = str(d / name)
    for name, body in FACTORIES.items():
        (d / f"{name}.py").write_text(_WORKLOAD + "\n" + textwrap.dedent(body))
        paths[name] = f"{d / name}.py:make"
    paths["no_attr"] = f"{d / 'empty_calib.py'}:nothing"
    paths.update(_hf_dirs(d))
    return paths

def _hf_dirs(d: Path) -> dict[str, str]:
    """``hf:`` directories missing one part each (the checks read only which files exist), and data files."""
    out = {}
    for name, files in (("hf_noweights", ("config.json", "tokenizer.json")), ("hf_notok", ("config.json", "model.safetensors")),
                        ("hf_ok", ("config.json", "model.safetensors", "tokenizer.json"))):
        (d / name).mkdir()
        for f in files:
            (d / name / f).write_text('{"model_type": "gpt2"}' if f == "config.json" else "")
        out[name] = str(d / name)
    (d / "empty.txt").write_text(" \n")
    (d / "data.jsonl").write_text('{"txt": "no text field"}\n')
    out.update(hf_empty=str(d / "empty.txt"), hf_jsonl=str(d / "data.jsonl"))
    return out


G = GOOD
DB = ["--db", "{db}"]
SEARCH = ["search", "--study", G, *DB]
# (id, argv, substring of the error line or None, paths that must not exist afterwards)
CASES: list[tuple[str, list[str], str | None, tuple[str, ...]]] = [
    # ---- Click usage errors: one line, not the usage box ------------------------------------
    ("usage-unknown-command", ["frobnicate"], "No such command", ()),
    ("usage-unknown-subcommand-studies", ["studies", "frob"], "No such command", ()),
    ("usage-unknown-subcommand-front", ["front", "frob"], "No such command", ()),
    ("usage-unknown-subcommand-proxies", ["proxies", "frob"], "No such command", ()),
    ("usage-search-unknown-option", ["search", "--bogus"], "No such option", ()),
    ("usage-search-points-not-int", ["search", "--points", "many"], "--points", ()),
    ("usage-search-workers-not-int", ["search", "--workers", "x"], "--workers", ()),
    ("usage-search-seed-float", ["search", "--seed", "1.5"], "--seed", ()),
    ("usage-search-target-tol-text", ["search", "--target-tol", "tight"], "--target-tol", ()),
    ("usage-search-option-missing-value", ["search", "--model"], "--model", ()),
    ("usage-studies-list-unknown-option", ["studies", "list", "--bogus"], "No such option", ()),
    ("usage-studies-compare-no-args", ["studies", "compare"], "Missing argument", ()),
    ("usage-studies-compare-one-arg", ["studies", "compare", G], "Missing argument", ()),
    ("usage-front-show-no-study", ["front", "show"], "Missing argument", ()),
    ("usage-front-show-unknown-option", ["front", "show", G, "--bogus"], "No such option", ()),
    ("usage-front-export-no-policy", ["front", "export", G], "Missing argument", ()),
    ("usage-front-export-no-output", ["front", "export", G, "12f6", *DB], "--output", ()),
    ("usage-front-plot-unknown-option", ["front", "plot", G, "--bogus"], "No such option", ()),
    ("usage-report-no-study", ["report"], "Missing argument", ()),
    ("usage-report-extra-arg", ["report", G, "extra"], "unexpected extra argument", ()),
    ("usage-validate-no-study", ["validate"], "Missing argument", ()),
    ("usage-validate-repeats-text", ["validate", G, "--repeats", "x"], "--repeats", ()),
    ("usage-profile-latency-no-output", ["profile-latency"], "--output", ()),
    ("usage-profile-latency-threads-text", ["profile-latency", "-o", "{dir}/t.json", "--threads", "x"], "--threads", ()),
    ("usage-audit-samples-text", ["proxies", "audit", "--samples", "x"], "--samples", ()),
    ("usage-proxies-list-extra", ["proxies", "list", "extra"], "unexpected extra argument", ()),
    # ---- databases ---------------------------------------------------------------------------
    ("db-missing-studies-list", ["studies", "list", "--db", "{missing_db}"], "no database file", ("{missing_db}",)),
    ("db-missing-front-show", ["front", "show", G, "--db", "{missing_db}"], "no database file", ("{missing_db}",)),
    ("db-missing-front-export", ["front", "export", G, "12f6", "-o", "{dir}/p.json", "--db", "{missing_db}"],
     "no database file", ("{missing_db}", "{dir}/p.json")),
    ("db-missing-front-plot", ["front", "plot", G, "-o", "{dir}/f.png", "--db", "{missing_db}"], "no database file",
     ("{missing_db}", "{dir}/f.png")),
    ("db-missing-report", ["report", G, "-o", "{dir}/r.html", "--db", "{missing_db}"], "no database file",
     ("{missing_db}", "{dir}/r.html")),
    ("db-missing-validate", ["validate", G, "--db", "{missing_db}"], "no database file", ("{missing_db}",)),
    ("db-missing-compare", ["studies", "compare", G, G, "--db", "{missing_db}"], "no database file", ("{missing_db}",)),
    ("db-missing-compare-b", ["studies", "compare", G, G, *DB, "--db-b", "{missing_db}"], "no database file",
     ("{missing_db}",)),
    ("db-missing-dir-search", ["search", "--points", "2", "--db", "{nodir}/s.db"], "does not exist", ("{nodir}",)),
    ("db-corrupt-studies-list", ["studies", "list", "--db", "{corrupt}"], "not a database", ()),
    ("db-corrupt-front-show", ["front", "show", G, "--db", "{corrupt}"], "not a database", ()),
    ("db-corrupt-report", ["report", G, "-o", "{dir}/r.html", "--db", "{corrupt}"], "not a database", ("{dir}/r.html",)),
    ("db-corrupt-validate", ["validate", G, "--db", "{corrupt}"], "not a database", ()),
    ("db-corrupt-search", ["search", "--study", G, "--db", "{corrupt}"], "not a database", ()),
    ("db-corrupt-audit", ["proxies", "audit", "--db", "{corrupt}"], "not a database", ()),
    ("db-bad-port-studies-list", ["studies", "list", "--db", "postgresql://u@localhost:99999/x"], "port", ()),
    ("db-bad-port-front-show", ["front", "show", G, "--db", "postgresql://u@localhost:99999/x"], "port", ()),
    ("db-bad-port-search", ["search", "--db", "postgresql://u@localhost:99999/x"], "port", ()),
    ("db-not-a-url", ["studies", "list", "--db", "://nothing"], "not a database URL", ()),
    ("db-unknown-driver", ["studies", "list", "--db", "nosuchdb://host/x"], None, ()),
    ("db-sqlite-bad-timeout", ["studies", "list", "--db", "sqlite:///{db}?timeout=soon"], "timeout", ()),
    ("db-config-not-json-front-show", ["front", "show", G, "--db", "{broken_json}"], "not valid JSON", ()),
    ("db-config-not-json-studies-list", ["studies", "list", "--db", "{broken_json}"], "not valid JSON", ()),
    ("db-config-not-json-report", ["report", G, "-o", "{dir}/r.html", "--db", "{broken_json}"], "not valid JSON",
     ("{dir}/r.html",)),
    ("db-config-not-json-search", ["search", "--study", G, "--db", "{broken_json}"], "not valid JSON", ()),
    ("db-config-not-json-validate", ["validate", G, "--db", "{broken_json}"], "not valid JSON", ()),
    ("db-no-such-study-front-show", ["front", "show", "nosuch", *DB], "no study named 'nosuch'", ()),
    ("db-no-such-study-report", ["report", "nosuch", "-o", "{dir}/r.html", *DB], "no study named", ("{dir}/r.html",)),
    ("db-no-such-study-compare", ["studies", "compare", G, "nosuch", *DB], "no study named", ()),
    ("db-policy-prefix-percent", ["front", "export", G, "%", "-o", "{dir}/p.json", *DB], "has no policy '%'",
     ("{dir}/p.json",)),
    ("db-policy-prefix-underscore", ["front", "export", G, "_2aa9", "-o", "{dir}/p.json", *DB],
     "has no policy '_2aa9'", ("{dir}/p.json",)),
    ("db-policy-prefix-missing", ["front", "export", G, "zzzz", "-o", "{dir}/p.json", *DB], "has no policy",
     ("{dir}/p.json",)),
    # ---- study names -------------------------------------------------------------------------
    *[(f"name-{cmd[0]}-{tag}",
       [c.replace("{name}", bad) for c in cmd], "invalid study name", ())
      for tag, bad in (("dotdot", "../escape"), ("markup", "[bold]x[/]"), ("space", "a b"), ("long", "x" * 201))
      for cmd in (["search", "--study", "{name}", *DB], ["front", "show", "{name}", *DB],
                  ["report", "{name}", *DB], ["validate", "{name}", *DB])],
    ("name-front-export", ["front", "export", "../x", "12f6", "-o", "{dir}/p.json", *DB], "invalid study name",
     ("{dir}/p.json",)),
    ("name-front-plot", ["front", "plot", "../x", "-o", "{dir}/f.png", *DB], "invalid study name", ("{dir}/f.png",)),
    ("name-compare-a", ["studies", "compare", "../x", G, *DB], "invalid study name", ()),
    ("name-compare-b", ["studies", "compare", G, "a/b", *DB], "invalid study name", ()),
    ("name-audit", ["proxies", "audit", "--study", "../x", *DB], "invalid study name", ()),
    ("name-empty", ["front", "show", "", *DB], "invalid study name", ()),
    # ---- files -------------------------------------------------------------------------------
    ("file-space-latin1-search", [*SEARCH, "--space", "{space_latin1}"], "not UTF-8", ()),
    ("file-space-latin1-audit", ["proxies", "audit", "--space", "{space_latin1}", *DB], "not UTF-8", ()),
    ("file-space-latin1-profile", ["profile-latency", "--space", "{space_latin1}", "-o", "{dir}/t.json"], "not UTF-8",
     ("{dir}/t.json",)),
    ("file-space-not-yaml", [*SEARCH, "--space", "{space_not_yaml}"], "not valid YAML", ()),
    ("file-space-list", [*SEARCH, "--space", "{space_list}"], "mapping", ()),
    ("file-space-bad-bits", [*SEARCH, "--space", "{space_bad_bits}"], "w_bits", ()),
    ("file-space-unknown-key", [*SEARCH, "--space", "{space_unknown_key}"], "unknown key", ()),
    ("file-space-missing", [*SEARCH, "--space", "{dir}/nothing.yaml"], "unknown search space", ()),
    ("file-space-override-typo-search", [*SEARCH, "--space", "{space_override_typo}"], "'conv9*' matches no layer", ()),
    ("file-space-override-typo-audit", ["proxies", "audit", "--space", "{space_override_typo}", "--db",
                                        "{dir}/audit.db"], "matches no layer", ()),
    ("file-space-override-typo-profile", ["profile-latency", "--space", "{space_override_typo}", "-o", "{dir}/t.json"],
     "matches no layer", ("{dir}/t.json",)),
    ("file-space-tie-typo-search", [*SEARCH, "--space", "{space_tie_typo}"], "'nolayer', which matches no layer", ()),
    ("file-space-tie-typo-profile", ["profile-latency", "--space", "{space_tie_typo}", "-o", "{dir}/t.json"],
     "matches no layer", ("{dir}/t.json",)),
    *[(f"file-{t.replace('_', '-')}", [*SEARCH, "--latency-table", "{%s}" % t], msg, ())
      for t, msg in (("table_latin1", "not UTF-8"), ("table_nan", "nan"), ("table_inf", "inf"),
                     ("table_negative", "-0.001"), ("table_not_json", "not JSON"), ("table_shape", "expected"),
                     ("table_text", "not a number"))],
    ("file-table-missing", [*SEARCH, "--latency-table", "{dir}/none.json"], "cannot read latency table", ()),
    ("file-output-dir-missing-report", ["report", G, "-o", "{nodir}/r.html", *DB], "does not exist", ()),
    ("file-output-dir-missing-plot", ["front", "plot", G, "-o", "{nodir}/f.png", *DB], "does not exist", ()),
    ("file-output-dir-missing-export", ["front", "export", G, "12f6", "-o", "{nodir}/p.json", *DB], "does not exist", ()),
    ("file-output-dir-missing-profile", ["profile-latency", "-o", "{nodir}/t.json"], "does not exist", ()),
    ("file-output-is-dir-report", ["report", G, "-o", "{dir}", *DB], "is a directory", ()),
    ("file-output-is-dir-profile", ["profile-latency", "-o", "{dir}"], "is a directory", ()),
    # ---- options -----------------------------------------------------------------------------
    ("opt-search-points-0", [*SEARCH, "--points", "0"], "--points", ()),
    ("opt-search-points-negative", [*SEARCH, "--points", "-3"], "--points", ()),
    ("opt-search-workers-0", [*SEARCH, "--workers", "0"], "--workers", ()),
    ("opt-search-workers-negative", [*SEARCH, "--workers", "-2"], "--workers", ()),
    ("opt-search-budget", [*SEARCH, "--budget", "size<=lots"], None, ()),
    ("opt-search-budget-metric", [*SEARCH, "--budget", "speed<=2"], None, ()),
    ("opt-search-proxy", [*SEARCH, "--proxy", "nosuch"], "nosuch", ()),
    ("opt-search-allocator", [*SEARCH, "--allocator", "nosuch"], "nosuch", ()),
    ("opt-search-data", [*SEARCH, "--data", "nosuch"], "nosuch", ()),
    ("opt-search-refine-mode", [*SEARCH, "--refine", "2", "--refine-mode", "nosuch"], "nosuch", ()),
    ("opt-search-refine-sampler", [*SEARCH, "--refine", "2", "--refine-sampler", "nosuch"], "nosuch", ()),
    ("opt-search-max-evals-no-target", [*SEARCH, "--max-evals", "3"], "only with --target", ()),
    ("opt-search-target", [*SEARCH, "--target", "better"], None, ()),
    ("opt-search-target-tol", [*SEARCH, "--target", "drop<=1%", "--target-tol", "2"], "--target-tol", ()),
    ("opt-search-max-evals-0", [*SEARCH, "--target", "drop<=1%", "--max-evals", "0"], "--max-evals", ()),
    ("opt-search-minimise", [*SEARCH, "--target", "drop<=1%", "--minimise", "nosuch"], "nosuch", ()),
    ("opt-search-latency-no-table", [*SEARCH, "--budget", "latency<=50%"], "--latency-table", ()),
    ("opt-search-interactions-negative", [*SEARCH, "--interactions", "-1"], "--interactions", ()),
    ("usage-search-interactions-text", ["search", "--interactions", "all"], "--interactions", ()),
    ("opt-search-interactions-dp", [*SEARCH, "--interactions", "2", "--allocator", "dp"], "--allocator ilp", ()),
    ("opt-search-repair-negative", [*SEARCH, "--repair", "-2"], "--repair", ()),
    ("opt-search-repair-target", [*SEARCH, "--repair", "2", "--target", "drop<=1%"], "--target", ()),
    ("opt-search-model-unknown", [*SEARCH, "--model", "nosuch"], "unknown model 'nosuch'", ()),
    ("opt-validate-repeats-0", ["validate", G, *DB, "--repeats", "0"], "--repeats", ()),
    ("opt-validate-repeats-negative", ["validate", G, *DB, "--repeats", "-1"], "--repeats", ()),
    ("opt-validate-threads-negative", ["validate", G, *DB, "--threads", "-1"], "--threads", ()),
    ("opt-validate-threads-0", ["validate", G, *DB, "--threads", "0"], "--threads", ()),
    ("opt-validate-device", ["validate", G, *DB, "--device", "tpu"], "unknown device", ()),
    ("opt-validate-model-missing", ["validate", G, *DB, "--model", "{dir}/nope.py:make"], "no such file", ()),
    ("opt-search-device", [*SEARCH, "--device", "tpu"], "--device must be one of", ()),
    ("opt-search-eval-dtype", [*SEARCH, "--eval-dtype", "float8"], "--eval-dtype must be one of", ()),
    ("opt-profile-repeats-0", ["profile-latency", "-o", "{dir}/t.json", "--repeats", "0"], "--repeats", ("{dir}/t.json",)),
    ("opt-profile-threads-negative", ["profile-latency", "-o", "{dir}/t.json", "--threads", "-1"], "--threads",
     ("{dir}/t.json",)),
    ("opt-profile-device", ["profile-latency", "-o", "{dir}/t.json", "--device", "tpu"], "unknown device", ()),
    ("opt-profile-space", ["profile-latency", "-o", "{dir}/t.json", "--space", "nosuch"], "unknown search space", ()),
    ("opt-front-show-kind", ["front", "show", G, *DB, "--kind", "bogus"], "unknown --kind 'bogus'", ()),
    ("opt-front-plot-costs", ["front", "plot", G, *DB, "--costs", "bogus", "-o", "{dir}/f.png"], "bogus",
     ("{dir}/f.png",)),
    ("opt-front-plot-costs-empty", ["front", "plot", G, *DB, "--costs", ",", "-o", "{dir}/f.png"], "--costs",
     ("{dir}/f.png",)),
    ("opt-compare-costs", ["studies", "compare", G, G, *DB, "--costs", "size,bogus"], "bogus", ()),
    ("opt-audit-samples-1", ["proxies", "audit", "--samples", "1", *DB], "--samples", ()),
    ("opt-audit-samples-0", ["proxies", "audit", "--samples", "0", *DB], "--samples", ()),
    ("opt-audit-workers-0", ["proxies", "audit", "--workers", "0", *DB], "--workers", ()),
    ("opt-audit-proxy", ["proxies", "audit", "--proxy", "nosuch", *DB], "nosuch", ()),
    ("opt-audit-data", ["proxies", "audit", "--data", "nosuch", *DB], "nosuch", ()),
    ("opt-audit-space", ["proxies", "audit", "--space", "nosuch", *DB], "unknown search space", ()),
    ("opt-audit-into-search-study", ["proxies", "audit", "--study", G, *DB], "is a search study", ()),
    # ---- user factories (--model file.py:make) -----------------------------------------------
    *[(f"model-{name.replace('_', '-')}-{cmd}", {
        "search": [*SEARCH, "--model", "{%s}" % name],
        "audit": ["proxies", "audit", "--model", "{%s}" % name, "--db", "{dir}/audit.db"],
        "profile": ["profile-latency", "--model", "{%s}" % name, "-o", "{dir}/t.json"]}[cmd], None, ("{dir}/t.json",))
      for name in FACTORIES for cmd in ("search", "audit", "profile")],
    ("model-missing-file", [*SEARCH, "--model", "{dir}/nothing.py:make"], "no such file", ()),
    ("model-missing-attr", [*SEARCH, "--model", "{no_attr}"], "no attribute", ()),
    ("model-missing-module", [*SEARCH, "--model", "no_such_pkg.models:make"], "cannot import", ()),
    ("model-empty", [*SEARCH, "--model", " "], "empty --model", ()),
    # ---- local Hugging Face models (--model hf:PATH) ------------------------------------------
    ("hf-missing-dir", [*SEARCH, "--model", "hf:{dir}/no model", "--data", "{hf_empty}"], "no such directory", ()),
    ("hf-missing-weights", [*SEARCH, "--model", "hf:{hf_noweights}", "--data", "{hf_empty}"], "no weights", ()),
    ("hf-missing-tokenizer", [*SEARCH, "--model", "hf:{hf_notok}", "--data", "{hf_empty}"], "no tokenizer", ()),
    ("hf-no-data", [*SEARCH, "--model", "hf:{hf_ok}"], "--data FILE", ()),
    ("hf-missing-data", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{dir}/none.txt"], "no such file", ()),
    ("hf-empty-data", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{hf_empty}"], "holds no text", ()),
    ("hf-unreadable-data", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{dir}"], "is a directory", ()),
    ("hf-jsonl-no-text", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{hf_jsonl}"], "no \"text\" string", ()),
    ("hf-task", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{hf_empty}", "--task", "seq2seq"], "unknown --task", ()),
    ("hf-seq-len-0", [*SEARCH, "--model", "hf:{hf_ok}", "--data", "{hf_empty}", "--seq-len", "0"], "--seq-len", ()),
    ("hf-seq-len-not-hf", [*SEARCH, "--seq-len", "64"], "only to an hf: model", ()),
    ("hf-task-not-hf", [*SEARCH, "--task", "encoder"], "only to an hf: model", ()),
]

# What the error line must name for each factory (the part that failed).
FACTORY_MESSAGES = {
    "loader_raises": "model_factory raised FileNotFoundError", "factory_raises": "factory raised RuntimeError",
    "factory_exits": "sys.exit(3)", "import_exits": "sys.exit(3)", "import_raises": "ImportError",
    "syntax_error": "SyntaxError", "forward_fails": "forward pass", "empty_calib": "calib is empty",
    "empty_eval": "eval is empty", "zero_batch": "batch size 0", "not_pairs": "calib[0]",
    "not_a_module": "not a torch.nn.Module", "not_a_workload": "must return autocomp.workload.Workload",
    "unknown_quality": "bleu",
}


def _fill(s: str, bad: dict[str, str]) -> str:
    return s.format(**bad) if "{" in s else s


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    """The ``autocomp`` entry point on ``argv``; its exit code, stdout and stderr."""
    from autocomp.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capfd.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(case, bad, capfd, tmp_path, monkeypatch):
    name, argv, expect, absent = case
    monkeypatch.chdir(tmp_path)  # a stray default ./autocomp.db would land here, not in the repo
    args = [_fill(a, bad) for a in argv]
    before = rows(Path(bad["db"]))
    code, out, err = run_cli(args, capfd)
    text = out + err
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert code == 2, text
    assert len(errors) == 1, text
    assert "╭" not in text and "Usage:" not in text, text  # Click's box is gone
    assert err.strip().splitlines()[-1] == errors[0], err  # the error is the last thing said
    factory = name.rsplit("-", 1)[0][len("model-"):].replace("-", "_")
    if name.startswith("model-") and factory in FACTORY_MESSAGES:
        expect = FACTORY_MESSAGES[factory]  # the line names the part of the workload that failed
    if expect is not None:
        assert expect in errors[0], errors[0]
    assert rows(Path(bad["db"])) == before  # the good study is untouched
    for p in absent:
        assert not Path(_fill(p, bad)).exists(), p
    assert not (tmp_path / "autocomp.db").exists(), os.listdir(tmp_path)  # no stray default database


def test_missing_transformers_is_one_line(bad, capfd, tmp_path, monkeypatch):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)   # `import transformers` raises ImportError
    code, out, err = run_cli([*(_fill(a, bad) for a in SEARCH), "--model", f"hf:{bad['hf_ok']}", "--data",
                              bad["hf_empty"]], capfd)
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "need transformers" in errors[0], out + err
    assert "Traceback" not in out + err


def test_suite_is_large():
    assert len(CASES) >= 100 and len({c[0] for c in CASES}) == len(CASES)
    assert set(FACTORY_MESSAGES) == set(FACTORIES)  # every bad factory's line is checked


def test_help_still_works(capfd):
    code, out, _ = run_cli(["front", "show", "--help"], capfd)
    assert code == 0 and "--kind" in out


def test_no_args_shows_the_help(capfd):
    code, out, err = run_cli(["front"], capfd)
    assert "show" in out + err and "Traceback" not in out + err
    assert code in (0, 2)


def test_markup_in_a_stored_study_name_prints_literally(bad, capfd, tmp_path):
    """A study whose stored name and model hold rich markup (written by an older autocomp) prints as is."""
    db = tmp_path / "markup.db"
    shutil.copy(bad["db"], db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE autocomp_studies SET name = '[bold]x[/]', "
                     "config = json_set(config, '$.model', '[red]m[/red]') WHERE name = ?", (GOOD,))
    code, out, err = run_cli(["studies", "list", "--db", str(db)], capfd)
    assert code == 0, out + err
    assert "[bold]x[/]" in out and "[red]m[/red]" in out


def test_underscore_prefix_exports_only_its_own_policy(bad, capfd, tmp_path):
    """A real prefix still exports (the LIKE escape only stops wildcards)."""
    out_file = tmp_path / "p.json"
    code, out, err = run_cli(["front", "export", GOOD, "22aa", "-o", str(out_file), "--db", bad["db"]], capfd)
    assert code == 0, out + err
    assert '"22aa901df4a1"' in out_file.read_text() or "22aa901df4a1" in out


def test_an_error_raised_in_a_ray_worker_is_said_as_the_worker_said_it():
    """A worker's AutocompError reaches the CLI as Ray's RayTaskError (of the same class): the
    error line is the worker's message, not Ray's "ray::task() (pid=...)" header."""
    from ray.exceptions import RayTaskError

    from autocomp.cli._common import _first_line
    from autocomp.errors import ModelSpecError

    cause = ModelSpecError("model spec 'wl.py:make': no such file '/elsewhere/wl.py'")
    wrapped = RayTaskError("run_part", "Traceback (most recent call last):\n  ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, ModelSpecError) and "(pid=" in str(wrapped).splitlines()[0]
    assert _first_line(wrapped) == str(cause)
    assert _first_line(ModelSpecError("plain\nsecond line")) == "plain"


def test_infeasible_size_names_the_parameters_no_layer_holds(tmp_path, capfd, monkeypatch):
    """A model whose attention projections are packed in ``nn.MultiheadAttention.in_proj_weight``
    (``nn.TransformerEncoder``, torchvision's ViT) keeps them fp32: a size budget below that floor
    is one line that says which tensors hold it, and no study is written."""
    (tmp_path / "enc.py").write_text(_WORKLOAD + textwrap.dedent("""
        def make():
            torch.manual_seed(0)
            layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=16, batch_first=True)
            model = torch.nn.Sequential(torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
                                        torch.nn.Flatten(), torch.nn.Linear(4 * 16, 3))
            data = [(torch.randn(8, 4, 16), torch.zeros(8, dtype=torch.long))]
            return Workload('enc', lambda: model.eval(), data, data)
    """))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["search", "--model", f"{tmp_path / 'enc.py'}:make", "--budget", "size<=20%",
                              "--space", "weight_only", "--db", str(tmp_path / "s.db")], capfd)
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in out + err, out + err
    assert "infeasible budget: size<=20%" in errors[0]
    assert "of the parameters are in no Conv1d/Conv2d/Linear/Embedding layer and stay fp32: " in errors[0]
    assert "0.layers.0.self_attn.in_proj_weight [48, 16]" in errors[0], errors[0]
    # the budget is checked once the model is loaded, after the database opened: it holds no study
    from autocomp.store import Store

    store = Store(str(tmp_path / "s.db"))
    try:
        assert store.list_studies() == []
    finally:
        store.dispose()
