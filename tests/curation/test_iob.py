"""IOB2 reader and writer: tiny assets, bad input, and the byte-exact round trip of the five flat corpora."""

from __future__ import annotations

import pytest

from curation.io import InputError
from curation.readers import detect_format, read_corpus
from curation.readers.iob import format_iob, read_iob
from curation.records import Span
from tests.helpers import ASSETS, real_file


def test_read_tiny_docstart():
    c = read_iob(ASSETS / "tiny_docstart.tsv")
    assert c.meta["docstart"] is True
    assert len(c) == 3
    first = c.records[0]
    assert first.text == "IL-2 gene expression in T cells ."
    assert first.spans == [Span(0, 9, "DNA"), Span(24, 31, "cell_type")]
    assert [s.surface(first.text) for s in first.spans] == ["IL-2 gene", "T cells"]
    assert c.records[0].doc_id == c.records[1].doc_id != c.records[2].doc_id
    assert c.records[1].spans == []
    assert c.labels == ["DNA", "cell_type", "protein"]


@pytest.mark.parametrize("name", ["tiny_docstart.tsv", "tiny_ncbi.tsv"])
def test_round_trip_tiny(name):
    path = ASSETS / name
    c = read_iob(path)
    assert format_iob(c.records, docstart=c.meta["docstart"]) == path.read_text()


@pytest.mark.parametrize("content,line,message", [
    ("a\tO\nb\n\n", 2, "expected 'token<TAB>tag'"),
    ("a\tO\nb\tX-A\n\n", 2, "is not O, B-TYPE or I-TYPE"),
    ("a\tO\nb\tO\nc\tI-Disease\n\n", 3, "continues no Disease entity"),
    ("a\tB-A\tO\n\n", 1, "expected 'token<TAB>tag'"),
])
def test_bad_lines_name_file_and_line(tmp_path, content, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        read_iob(path)
    assert err.value.line == line
    assert str(err.value).startswith(f"{path}:{line}: ")
    assert message in str(err.value)


def test_iob1_accepts_orphan_inside(tmp_path):
    path = tmp_path / "iob1.tsv"
    path.write_text("a\tO\nb\tI-Disease\nc\tI-Disease\n\n")
    assert read_iob(path, scheme="iob1").records[0].spans == [Span(2, 5, "Disease")]


def test_empty_and_non_utf8(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="file is empty"):
        read_iob(empty)
    latin = tmp_path / "latin.tsv"
    latin.write_bytes(b"a\tO\n\xe9t\xe9\tO\n\n")
    with pytest.raises(InputError, match="not UTF-8") as err:
        read_iob(latin)
    assert err.value.line == 2


FLAT = ["BC2GM", "BC5CDR", "JNLPBA", "NCBI-disease", "linnaeus"]


@pytest.mark.real
@pytest.mark.parametrize("corpus", FLAT)
@pytest.mark.parametrize("split", ["train", "devel", "test"])
def test_real_round_trip_byte_identical(corpus, split):
    path = real_file("ner", corpus, f"{split}.tsv")
    c = read_corpus(path)
    assert detect_format(path) == "iob"
    assert format_iob(c.records, docstart=c.meta["docstart"]).encode() == path.read_bytes()
