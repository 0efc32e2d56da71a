import json

import polars as pl
import pytest

from distill_assets.config import ExternalSource, load_config
from distill_assets.tasks.external import ExternalSourceError, read_commitpackft, read_external_sources, read_swebench


def test_shipped_samples_read_in_their_published_schemas():
    df, stats = read_external_sources(load_config().sources.external)
    assert df["source"].to_list().count("commitpackft") == 3  # 5 rows grouped by commit
    assert df["source"].to_list().count("swebench") == 2
    swe = df.filter(pl.col("task_id") == "swebench:example-org__calclib-117").row(0, named=True)
    assert swe["fail_to_pass"] == ["tests/test_stats.py::test_empty"]
    assert swe["changed_files"] == ["calclib/stats.py", "calclib/report.py", "tests/test_stats.py"]
    assert "Hints:" in swe["description"]
    cpf = df.filter(pl.col("task_id").str.starts_with("commitpackft:3f1c")).row(0, named=True)
    assert cpf["changed_files"] == ["textkit/wrap.py", "textkit/cli.py"]
    assert cpf["gold_patch"].startswith("diff --git a/textkit/wrap.py b/textkit/wrap.py")
    assert cpf["repo"] == "example-org/textkit"


def test_bad_rows_are_counted_by_reason(tmp_path):
    p = tmp_path / "swe.jsonl"
    good = {
        "repo": "o/r",
        "instance_id": "o__r-1",
        "base_commit": "a" * 40,
        "patch": "diff --git a/x b/x\n",
        "problem_statement": "bug",
        "FAIL_TO_PASS": "[]",
        "PASS_TO_PASS": "[]",
        "created_at": "2024-01-01",
    }
    rows = [
        good,
        {**good, "instance_id": "o__r-2", "patch": ""},
        {**good, "instance_id": "o__r-3", "FAIL_TO_PASS": "[oops"},
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    res = read_swebench(ExternalSource(kind="swebench", path=p))
    assert len(res.rows) == 1 and res.read == 4
    assert res.rejected == {"missing_patch": 1, "bad_field_value": 1, "unreadable_row": 1}


def test_parquet_and_datasets_copies(tmp_path):
    src = load_config().sources.external[0].path
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    pq = tmp_path / "cpf.parquet"
    pl.DataFrame(rows).write_parquet(pq)
    res = read_commitpackft(ExternalSource(kind="commitpackft", path=pq))
    assert len(res.rows) == 3
    import datasets

    ds_dir = tmp_path / "cpf_ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(ds_dir))
    res = read_commitpackft(ExternalSource(kind="commitpackft", path=ds_dir, limit=2))
    assert len(res.rows) == 2


def test_missing_or_unknown_files_are_clear_errors(tmp_path):
    with pytest.raises(ExternalSourceError, match="not found"):
        read_swebench(ExternalSource(kind="swebench", path=tmp_path / "nope.jsonl"))
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ExternalSourceError, match="unsupported format"):
        read_swebench(ExternalSource(kind="swebench", path=tmp_path / "x.csv"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ExternalSourceError, match="not a `datasets.save_to_disk` copy"):
        read_swebench(ExternalSource(kind="swebench", path=tmp_path / "folder"))
