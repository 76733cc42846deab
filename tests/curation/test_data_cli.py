"""`bioselect data stats|convert|sample` end to end, and the bad-input contract (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from curation.cli import main as bioselect
from curation.data import main as data_main
from tests.helpers import ASSETS, REPO, real_file


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_stats_tiny(capsys):
    assert bioselect(["data", "stats", str(ASSETS / "tiny_docstart.tsv")]) == 0
    out = capsys.readouterr().out
    assert "sentences 3  documents 2" in out
    assert "mentions: DNA 2, cell_type 1, protein 1" in out


def test_convert_and_sample_tiny(tmp_path):
    out = tmp_path / "conv.jsonl"
    assert data_main(["convert", str(ASSETS / "tiny_ncbi.tsv"), "--task", "ner", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    manifest = json.loads((tmp_path / "conv.jsonl.manifest.json").read_text())
    assert manifest["records"] == 3 and manifest["negatives"] == 1
    assert len(manifest["inputs"]) == 1 and manifest["git_commit"] is None or isinstance(manifest["git_commit"], str)
    sampled = tmp_path / "half.jsonl"
    assert data_main(["sample", str(out), "--fraction", "0.67", "--seed", "3", "--output", str(sampled)]) == 0
    kept = [json.loads(line) for line in sampled.read_text().splitlines()]
    assert len(kept) == 2 and all(r in rows for r in kept)


def test_sample_ladder_iob(tmp_path):
    assert data_main(["sample", str(ASSETS / "tiny_docstart.tsv"), "--seed", "0", "--fractions", "1,0.67,0.34",
                      "--output", str(tmp_path)]) == 0
    sizes = {f: (tmp_path / f"tiny_docstart.{f}.tsv").read_text().count("\n\n") for f in ("1", "0.67", "0.34")}
    assert sizes == {"1": 3, "0.67": 2, "0.34": 1}


@pytest.mark.parametrize("content,expect", [
    ("a\tO\nb\n\n", ":2: expected 'token<TAB>tag'"),
    ("a\tO\nb\tB_X\n\n", ":2: tag 'B_X' is not O, B-TYPE or I-TYPE"),
    ("a\tO\nb\tI-Disease\n\n", ":2: tag 'I-Disease' continues no Disease entity"),
    ("\n", ": file is empty"),
])
def test_bad_iob_convert(tmp_path, capsys, content, expect):
    bad = tmp_path / "bad.tsv"
    bad.write_text(content)
    out = tmp_path / "out.jsonl"
    assert data_main(["convert", str(bad), "--task", "ner", "--output", str(out)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {bad}") and expect in line
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_jsonl_is_named_empty(tmp_path, capsys, content):
    bad = tmp_path / "records.jsonl"
    bad.write_text(content)
    assert data_main(["convert", str(bad), "--task", "ner", "--output", str(tmp_path / "out.jsonl")]) == 2
    assert _one_error_line(capsys) == f"error: {bad}: file is empty"
    assert list(tmp_path.iterdir()) == [bad]


def test_bad_json_and_non_utf8(tmp_path, capsys):
    bad = tmp_path / "records.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    assert data_main(["stats", str(bad)]) == 2
    assert ":2: invalid JSON" in _one_error_line(capsys)
    span = tmp_path / "span.jsonl"
    span.write_text('{"id": "a", "text": "abc", "spans": [[1, 9, "X"]]}\n')
    assert data_main(["stats", str(span)]) == 2
    assert ":1 (record a): span [1, 9, 'X'] is outside the text" in _one_error_line(capsys)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"caf\xe9\tO\n\n")
    assert data_main(["stats", str(latin)]) == 2
    assert ":1: not UTF-8" in _one_error_line(capsys)


def test_bad_options(tmp_path, capsys):
    assert data_main(["sample", str(ASSETS / "tiny_ncbi.tsv"), "--fraction", "1.5", "--output",
                      str(tmp_path / "x.tsv")]) == 2
    assert "--fraction: must be in (0, 1]" in _one_error_line(capsys)
    assert data_main(["convert", str(ASSETS / "tiny_ncbi.tsv"), "--task", "qa", "--output", "x"]) == 2
    assert "--task: must be ner, re, ee or tc" in _one_error_line(capsys)
    assert not (tmp_path / "x.tsv").exists()


def test_console_script_and_module_run():
    script = Path(sys.executable).parent / "bioselect"  # installed by `pip install -e .` into the venv
    for exe in ([str(script)], [sys.executable, "-m", "curation.cli"], [sys.executable, "-m", "curation.data"]):
        args = ["stats"] if exe[-1] == "curation.data" else ["data", "stats"]
        proc = subprocess.run([*exe, *args, str(ASSETS / "tiny_ncbi.tsv")], capture_output=True, text=True, cwd=REPO)
        assert proc.returncode == 0 and "sentences 3" in proc.stdout, proc.stderr
    proc = subprocess.run([str(script), "data", "stats", str(ASSETS / "missing.tsv")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {ASSETS / 'missing.tsv'}: no such file"


@pytest.mark.real
def test_real_ncbi_stats(capsys):
    assert bioselect(["data", "stats", str(real_file("ner", "NCBI-disease", "test.tsv"))]) == 0
    out = capsys.readouterr().out
    assert "sentences 940" in out and "mentions: Disease 960" in out


@pytest.mark.real
@pytest.mark.parametrize("corpus,split,sentences,mentions,docs,dups", [
    ("NCBI-disease", "train", 5424, {"Disease": 5134}, None, 24),
    ("NCBI-disease", "devel", 923, {"Disease": 787}, None, 0),
    ("NCBI-disease", "test", 940, {"Disease": 960}, None, 3),
    ("BC5CDR", "train", 4560, {"Chemical": 5203, "Disease": 4182}, None, 7),
    ("BC5CDR", "devel", 4581, {"Chemical": 5347, "Disease": 4246}, None, 12),
    ("BC5CDR", "test", 4797, {"Chemical": 5385, "Disease": 4424}, None, 9),
    ("BC2GM", "train", 12574, {"GENE": 15197}, None, 76),
    ("BC2GM", "devel", 2519, {"GENE": 3061}, None, 17),
    ("BC2GM", "test", 5038, {"GENE": 6325}, None, 23),
    ("linnaeus", "train", 11935, {"Species": 2119}, None, 1100),
    ("linnaeus", "devel", 4078, {"Species": 711}, None, 258),
    ("linnaeus", "test", 7142, {"Species": 1433}, None, 576),
    ("JNLPBA", "train", 16807, {"protein": 27803, "DNA": 8481, "cell_type": 6192, "cell_line": 3430, "RNA": 844},
     1800, 71),
    ("JNLPBA", "devel", 1739, {"protein": 2466, "DNA": 1052, "cell_type": 526, "cell_line": 400, "RNA": 107}, 200, 4),
    ("JNLPBA", "test", 3856, {"protein": 5067, "DNA": 1056, "cell_type": 1921, "cell_line": 500, "RNA": 118}, 404,
     26),
])
def test_real_flat_corpus_counts_match_readme(corpus, split, sentences, mentions, docs, dups):
    from curation.readers import read_corpus
    from curation.stats import corpus_stats

    s = corpus_stats(read_corpus(real_file("ner", corpus, f"{split}.tsv")))
    assert (s["sentences"], s["mentions"], s["documents"], s["duplicates"]) == (sentences, mentions, docs, dups)


def test_unknown_option_is_one_line_exit_2(capsys):
    assert data_main(["stats", str(ASSETS / "tiny_ncbi.tsv"), "--bogus", "1"]) == 2
    assert _one_error_line(capsys) == "error: --bogus: no such option (see --help)"


# --- brat, BioC, BigBio through stats, convert, sample and export ------------------------------------------------

FORMATS = ASSETS / "readers"


@pytest.mark.parametrize(("path", "fmt", "mentions"), [
    ("brat", "brat", "mentions 12"), ("bioc/tiny.xml", "bioc", "mentions 13"),
    ("bioc/tiny.json", "bioc", "mentions 13"), ("bigbio/tiny.jsonl", "bigbio", "mentions 12"),
])
def test_stats_convert_sample_on_brat_bioc_bigbio(tmp_path, capsys, path, fmt, mentions):
    from curation.readers import read_corpus

    corpus = read_corpus(FORMATS / path)
    assert data_main(["stats", str(FORMATS / path)]) == 0
    out = capsys.readouterr().out
    assert f"({fmt}, dataset " in out and "documents 2" in out and mentions in out and "events: " in out
    conv = tmp_path / "conv.jsonl"
    assert data_main(["convert", str(FORMATS / path), "--task", "ner", "--output", str(conv)]) == 0
    rows = [json.loads(line) for line in conv.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [r.id for r in corpus]
    loop = next(s for s in rows[0]["spans"] if len(s) == 4)  # the discontinuous drug, in its list form
    assert [loop[2], len(loop[3])] == ["Drug", 2]
    names = [e["name"] for e in json.loads(rows[0]["output"])]
    assert rows[0]["input"][loop[3][0][0]:loop[3][0][1]] + " " + rows[0]["input"][loop[3][1][0]:loop[3][1][1]] in names
    assert data_main(["convert", str(FORMATS / path), "--task", "ee", "--output", str(tmp_path / "ee.jsonl")]) == 0
    sample = tmp_path / "half.jsonl"
    assert data_main(["sample", str(FORMATS / path), "--fraction", "0.5", "--unit", "document", "--seed", "1",
                      "--output", str(sample)]) == 0
    kept = read_corpus(sample, format="records").records
    assert len(kept) == 1 and kept[0] in corpus.records  # every field, meta included, survives the sample file


def test_export_brat_to_bioc_and_back(tmp_path, capsys):
    from curation.readers import read_corpus

    assert data_main(["export", str(FORMATS / "brat"), "--to", "bioc", "--output", str(tmp_path / "x")]) == 0
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["brat.xml", "manifest.json"]
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["records"] == 2 and manifest["files"] == ["brat.xml"] and manifest["to"] == "bioc"
    assert data_main(["export", str(tmp_path / "x" / "brat.xml"), "--to", "brat", "--output",
                      str(tmp_path / "y")]) == 0
    original = read_corpus(FORMATS / "brat").records
    again = read_corpus(tmp_path / "y").records
    assert [(r.id, r.text, r.spans, r.relations, r.events) for r in again] == [
        (r.id, r.text, r.spans, r.relations, r.events) for r in original]
    # the same export again into its own folder is fine; into a folder of another export it is not
    assert data_main(["export", str(tmp_path / "x" / "brat.xml"), "--to", "brat", "--output",
                      str(tmp_path / "y")]) == 0
    capsys.readouterr()
    assert data_main(["export", str(FORMATS / "bioc" / "tiny.xml"), "--to", "brat", "--output",
                      str(tmp_path / "y")]) == 2
    assert "is in the output folder but not part of this export" in _one_error_line(capsys)


def _predictions(tmp_path) -> tuple:
    conv = tmp_path / "test.jsonl"
    assert data_main(["convert", str(ASSETS / "tiny_ncbi.tsv"), "--output", str(conv)]) == 0
    rows = [json.loads(line) for line in conv.read_text().splitlines()]
    text = rows[0]["input"]
    name = next(e["name"] for e in json.loads(rows[0]["output"]))
    start = text.index(name)
    pred = tmp_path / "pred.jsonl"
    lines = [{"id": rows[0]["id"], "output": json.dumps([{"entity": "Disease", "name": name}]),
              "spans": [[start, start + len(name), "Disease"]], "status": "ok", "unplaced": 0},
             {"id": rows[2]["id"], "output": "not json", "spans": [], "status": "parse_error", "unplaced": 0}]
    pred.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return conv, pred, rows, (start, start + len(name), name)


def test_export_predictions_for_review(tmp_path, capsys):
    from curation.readers import read_corpus

    conv, pred, rows, (start, end, name) = _predictions(tmp_path)
    capsys.readouterr()
    assert data_main(["export", str(pred), "--input", str(conv), "--to", "brat", "--output",
                      str(tmp_path / "review")]) == 0
    out = capsys.readouterr().out
    assert "wrote 2 records as brat" in out and "1 records of" in out  # rows[1] has no prediction
    review = read_corpus(tmp_path / "review")
    assert [r.id for r in review] == [rows[0]["id"], rows[2]["id"]]
    assert review.records[0].text == rows[0]["input"] and review.records[1].spans == []
    assert [(s.start, s.end, s.label, s.surface(review.records[0].text)) for s in review.records[0].spans] == [
        (start, end, "Disease", name)]
    assert data_main(["export", str(pred), "--input", str(conv), "--to", "bioc", "--output",
                      str(tmp_path / "bioc")]) == 0
    bioc = read_corpus(tmp_path / "bioc" / "pred.xml")
    assert bioc.records[1].meta["infons"] == {"status": "parse_error", "unplaced": "0", "output": "not json"}
    assert bioc.records[0].spans == review.records[0].spans


def test_export_predictions_need_their_input(tmp_path, capsys):
    conv, pred, rows, _ = _predictions(tmp_path)
    capsys.readouterr()
    assert data_main(["export", str(pred), "--to", "brat", "--output", str(tmp_path / "r")]) == 2
    assert "looks like predictions; give --input" in _one_error_line(capsys)
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(pred.read_text() + '{"id": "nope", "output": "[]", "spans": []}\n')
    assert data_main(["export", str(unknown), "--input", str(conv), "--to", "brat", "--output",
                      str(tmp_path / "r")]) == 2
    assert f"{unknown}:3: id 'nope' is not in" in _one_error_line(capsys)
    assert not (tmp_path / "r").exists()


def _advice_csv(path: Path, n_docs: int = 10) -> Path:
    """``n_docs`` abstracts (pmids) of three sentences each, labels 0/1/2 spread over them."""
    rows = ["label,pmid,sentence,design"]
    for d in range(n_docs):
        for k in range(3):
            rows.append(f"{(d + k) % 3},{100 + d},Sentence {k} of abstract {d} says something.,RCT")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_split_keeps_documents_whole_and_reads_back_as_a_corpus_with_its_own_split(tmp_path, capsys):
    from curation.readers import read_corpus
    from curation.splits import load_splits

    source = _advice_csv(tmp_path / "advice.csv")
    out = tmp_path / "split" / "Advice"
    assert data_main(["split", str(source), "--ratios", "0.6,0.2,0.2", "--seed", "1", "--output", str(out)]) == 0
    parts = {name: read_corpus(out / f"{name}.jsonl", format="records").records for name in ("train", "dev", "test")}
    assert [len(parts[n]) for n in ("train", "dev", "test")] == [18, 6, 6]  # 6 / 2 / 2 abstracts of 3 sentences
    docs = {n: {r.doc_id for r in recs} for n, recs in parts.items()}
    assert not docs["train"] & docs["dev"] and not docs["train"] & docs["test"] and not docs["dev"] & docs["test"]
    original = {r.id: r for r in read_corpus(source).records}
    written = [r for recs in parts.values() for r in recs]
    assert sorted(r.id for r in written) == sorted(original)  # every record once, nothing added
    assert all(r.to_dict() == original[r.id].to_dict() for r in written)  # labels, doc ids and meta unchanged
    manifest = json.loads((out / "test.jsonl.manifest.json").read_text())
    assert manifest["records"] == 6 and manifest["of"] == 30 and manifest["documents"] == 10
    assert sum(manifest["labels"].values()) == 6
    # the folder is a corpus with its own split for the search and the baselines
    splits = load_splits(out)
    assert [len(splits.train), len(splits.dev), len(splits.test)] == [18, 6, 6] and "own split" in splits.how
    # and the same seed gives the same split, another seed another one
    again = tmp_path / "again"
    assert data_main(["split", str(source), "--seed", "1", "--output", str(again)]) == 0
    assert (again / "test.jsonl").read_text() == (out / "test.jsonl").read_text()
    other = tmp_path / "other"
    assert data_main(["split", str(source), "--seed", "2", "--output", str(other)]) == 0
    assert (other / "test.jsonl").read_text() != (out / "test.jsonl").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["--ratios", "0.5,0.5"], "--ratios: must be three positive shares summing to 1"),
    (["--ratios", "0.6,0.2,x"], "--ratios: expected comma-separated numbers"),
    (["--ratios", "0.98,0.01,0.01"], "keeps no document"),
])
def test_split_refuses_bad_ratios_and_writes_nothing(tmp_path, capsys, args, message):
    source = _advice_csv(tmp_path / "advice.csv")
    out = tmp_path / "split"
    assert data_main(["split", str(source), *args, "--output", str(out)]) == 2
    assert message in _one_error_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_split_refuses_a_folder_with_files(tmp_path, capsys):
    source = _advice_csv(tmp_path / "advice.csv")
    out = tmp_path / "split"
    out.mkdir()
    (out / "train.jsonl").write_text("keep me\n")
    assert data_main(["split", str(source), "--output", str(out)]) == 2
    assert "exists and is not an empty folder" in _one_error_line(capsys)
    assert (out / "train.jsonl").read_text() == "keep me\n"
