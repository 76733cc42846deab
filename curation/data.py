"""``bioselect data``: corpus statistics, conversion to instruction JSONL, class-balanced downsampling.

    bioselect data stats ../shared/data/ner/NCBI-disease/test.tsv
    bioselect data convert ../shared/data/ner/NCBI-disease/test.tsv --task ner --output runs/ncbi_test.jsonl
    bioselect data sample ../shared/data/ner/NCBI-disease/train.tsv --fraction 0.25 --seed 0 --output runs/ncbi_25.tsv
    bioselect data sample ../shared/data/ner/NCBI-disease/train.tsv --seed 0 --output runs/ladder/   # whole ladder
    bioselect data split ../shared/data/cls/HealthAdvice/annotations_structured_abstract.csv --output runs/ha/
    bioselect data export ../shared/data/re/BioRED/Dev.PubTator --to bioc --output runs/biored_bioc/
    bioselect data export runs/pred.jsonl --input runs/ncbi_test.jsonl --to brat --output runs/review/

Also ``python -m curation.data SUBCOMMAND ...``. The format of a corpus is detected from its name and content;
``--format`` overrides it. Bad input stops with one line naming the file and line, exit code 2, nothing written.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curation.cli import parse_config, run
from curation.io import (
    Files,
    InputError,
    atomic_write,
    comma_floats,
    provenance,
    read_jsonl,
    together,
    write_json,
    write_jsonl,
)
from curation.readers import READERS, detect_format, read_corpus
from curation.records import Corpus, Record, Span

SUBCOMMANDS = ("stats", "convert", "sample", "split", "export")
_FORMAT_HELP = f"Corpus format ({', '.join(sorted(READERS))}); detected from name and content when omitted."


@dataclass
class ReadArgs:
    format: str | None = field(default=None, metadata={"help": _FORMAT_HELP})
    scheme: str = field(default="iob2", metadata={"help": "BIO scheme of IOB files: iob2 (strict) or iob1."})
    dataset: str | None = field(default=None, metadata={"help": "Dataset name (default: the file's folder)."})

    def __post_init__(self):
        if self.scheme not in ("iob1", "iob2"):
            raise InputError("--scheme", f"must be iob1 or iob2, not {self.scheme!r}")
        if self.format is not None and self.format not in READERS:
            raise InputError("--format", f"unknown format {self.format!r}; one of {', '.join(sorted(READERS))}")


MANIFEST = ".manifest.json"


@dataclass
class StatsConfig(ReadArgs):
    json: str | None = field(default=None, metadata={"help": "Also write all statistics to this JSON file."})
    paths: list[str] = field(init=False, default_factory=list)  # the positional arguments

    def files(self) -> Files:
        return Files(reads=self.paths, writes=[self.json])


@dataclass
class ConvertConfig(ReadArgs):
    task: str = field(default="ner", metadata={"help": "Task family: ner, re, ee or tc."})
    output: str = field(default="", metadata={"help": "Instruction JSONL to write."})
    labels: str | None = field(default=None, metadata={
        "help": "Comma-separated label list for the instruction (default: the labels found in the file)."})
    path: str = field(init=False, default="")  # the positional argument

    def __post_init__(self):
        super().__post_init__()
        if self.task not in ("ner", "re", "ee", "tc"):
            raise InputError("--task", f"must be ner, re, ee or tc, not {self.task!r}")
        if not self.output:
            raise InputError("--output", "is required")

    def files(self) -> Files:
        return Files(reads=[self.path], writes=[self.output, self.output + MANIFEST])


@dataclass
class SampleConfig(ReadArgs):
    fraction: float | None = field(default=None, metadata={
        "help": "Share of records to keep, in (0, 1]. Omit to write the whole ladder into the --output folder."})
    fractions: str = field(default="0.75,0.5,0.25,0.1,0.075,0.05,0.025", metadata={
        "help": "The ladder written when --fraction is omitted (nested subsets for one seed)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output: str = field(default="", metadata={"help": "Output file (with --fraction) or folder (ladder)."})
    unit: str = field(default="sentence", metadata={"help": "Sample 'sentence's or whole 'document's."})
    path: str = field(init=False, default="")  # the positional argument

    def __post_init__(self):
        super().__post_init__()
        if not self.output:
            raise InputError("--output", "is required")
        if self.unit not in ("sentence", "document"):
            raise InputError("--unit", f"must be sentence or document, not {self.unit!r}")
        for f in self.ladder():
            if not 0 < f <= 1:
                raise InputError("--fraction", f"must be in (0, 1], not {f}")

    def outputs(self, suffix: str) -> list[Path]:
        """The sample file of each fraction (``suffix``: the corpus format's, .tsv or .jsonl, for a ladder)."""
        if self.fraction is not None:
            return [Path(self.output)]
        return [Path(self.output) / f"{Path(self.path).stem}.{f:g}{suffix}" for f in self.ladder()]

    def files(self) -> Files:
        outs = [*self.outputs(".tsv"), *self.outputs(".jsonl")]
        return Files(reads=[self.path], writes=outs + [f"{p}{MANIFEST}" for p in outs],
                     folders=[self.output] if self.fraction is None else [])

    def ladder(self) -> list[float]:
        if self.fraction is not None:
            return [self.fraction]
        try:
            return [float(x) for x in self.fractions.split(",") if x.strip()]
        except ValueError:
            raise InputError("--fractions", f"not a comma-separated list of numbers: {self.fractions!r}") from None


@dataclass
class SplitConfig(ReadArgs):
    ratios: str = field(default="0.6,0.2,0.2", metadata={
        "help": "Shares of the documents in train, dev and test (three positive numbers summing to 1)."})
    seed: int = field(default=0, metadata={"help": "Seed of the class-balanced document order."})
    output: str = field(default="", metadata={
        "help": "Folder to write train.jsonl, dev.jsonl and test.jsonl into (records format, each with a manifest); "
                "created, and it must not exist with files in it."})
    path: str = field(init=False, default="")  # the positional argument

    def __post_init__(self):
        super().__post_init__()
        if not self.output:
            raise InputError("--output", "is required")

    def shares(self) -> list[float]:
        shares = comma_floats(self.ratios, "--ratios")
        if len(shares) != 3 or any(r <= 0 for r in shares) or abs(sum(shares) - 1) > 1e-6:
            raise InputError("--ratios", f"must be three positive shares summing to 1, not {self.ratios!r}")
        return shares

    def outputs(self) -> list[Path]:
        return [Path(self.output) / f"{name}.jsonl" for name in ("train", "dev", "test")]

    def files(self) -> Files:
        # a corpus folder is sealed: a split written inside it would sit in the corpus it was cut from
        return Files(reads=[self.path], writes=[*self.outputs(), *(f"{p}{MANIFEST}" for p in self.outputs())],
                     folders=[self.output], sealed=[self.path] if Path(self.path).is_dir() else [])


@dataclass
class ExportConfig(ReadArgs):
    to: str = field(default="", metadata={"help": "Format to write: brat (NAME.txt + NAME.ann per record, and "
                                                  "annotation.conf) or bioc (one BioC XML collection)."})
    output: str = field(default="", metadata={"help": "Folder to write into (created; it must not hold files of "
                                                      "another export)."})
    input: str | None = field(default=None, metadata={
        "help": "The instruction JSONL that `tune generate` read: PATH is then its predictions, exported with this "
                "file's input texts and the predicted spans."})
    path: str = field(init=False, default="")  # the positional argument

    def __post_init__(self):
        super().__post_init__()
        if self.to not in ("brat", "bioc"):
            raise InputError("--to", f"must be brat or bioc, not {self.to!r}" if self.to else "is required")
        if not self.output:
            raise InputError("--output", "is required")

    def files(self) -> Files:
        # a corpus folder is sealed: an export inside it would be read as part of the corpus next time
        return Files(reads=[self.path, self.input], writes=[Path(self.output) / "manifest.json"],
                     folders=[self.output], sealed=[self.path] if Path(self.path).is_dir() else [])


def _read(path: str, cfg: ReadArgs, fmt: str | None = None) -> Corpus:
    """Read a corpus in ``fmt`` (default: ``--format``, else detected once here)."""
    fmt = fmt or cfg.format or detect_format(path)
    kwargs = {"scheme": cfg.scheme} if fmt == "iob" else {}
    return read_corpus(path, format=fmt, dataset=cfg.dataset or "", **kwargs)


def stats_main(argv: Sequence[str]) -> int:
    from curation.stats import corpus_stats, format_stats

    cfg, _ = parse_config(StatsConfig, argv, "bioselect data stats",
                          positional={"paths": {"nargs": "+", "help": "Corpus files or folders."}})
    all_stats = []
    for path in cfg.paths:
        s = corpus_stats(_read(path, cfg))
        all_stats.append(s)
        print(format_stats(s))
    if cfg.json:
        write_json(cfg.json, {"files": all_stats, "provenance": provenance(cfg, cfg.paths)})
    return 0


def convert_main(argv: Sequence[str]) -> int:
    from curation.convert import convert_corpus, validate_outputs

    cfg, _ = parse_config(ConvertConfig, argv, "bioselect data convert",
                          positional={"path": {"help": "Corpus file or folder."}})
    corpus = _read(cfg.path, cfg)
    labels = [x.strip() for x in cfg.labels.split(",")] if cfg.labels else None
    try:
        rows = convert_corpus(corpus, task=cfg.task, labels=labels, dataset=cfg.dataset)
    except ValueError as err:
        raise InputError(cfg.path, str(err)) from None
    if labels:
        extra = sorted({s[2] for r in rows for s in r.get("spans", [])} - set(labels))
        if extra:
            raise InputError(cfg.path, f"labels {extra} occur in the corpus but not in --labels")
    failures = validate_outputs(rows, labels)
    if failures:
        rid, msg = failures[0]
        raise InputError(cfg.path, f"{len(failures)} converted outputs fail the {cfg.task} schema; first: {msg}",
                         record=rid)
    n_neg = sum(1 for r in rows if r["output"] in ("[]",))
    with together():  # the output and its manifest land together or not at all
        write_jsonl(cfg.output, rows)
        write_json(cfg.output + MANIFEST, provenance(
            cfg, [cfg.path], records=len(rows), negatives=n_neg, task=cfg.task, dataset=rows[0]["dataset"] if rows
            else None, labels=labels or sorted({s[2] for r in rows for s in r.get("spans", [])}),
            instruction=rows[0]["instruction"] if rows else None))
    print(f"wrote {len(rows):,} {cfg.task} records ({n_neg:,} with output []) to {cfg.output}")
    return 0


def _instruction_corpus(path: str) -> tuple[list[dict], Corpus]:
    """Raw instruction rows plus records carrying what stratification needs (span types or the TC label)."""
    rows, records = [], []
    for n, obj in read_jsonl(path):
        for key in ("id", "output"):
            if key not in obj:
                raise InputError(path, f"instruction record lacks {key!r}", line=n)
        try:
            spans = [Span.from_list(s) for s in obj.get("spans", [])]
        except (TypeError, ValueError):
            raise InputError(path, "'spans' must be a list of [start, end, label] (or [start, end, label, "
                                   "fragments])", line=n, record=str(obj["id"])) from None
        labels: list[str] = []
        try:
            out = json.loads(obj["output"])
        except (json.JSONDecodeError, TypeError):
            raise InputError(path, "output is not JSON text", line=n, record=str(obj["id"])) from None
        if isinstance(out, dict) and "label" in out:
            labels = [str(out["label"])]
        elif not spans and isinstance(out, list):
            labels = sorted({str(x.get("entity") or x.get("relation") or x.get("event") or "+")
                             for x in out if isinstance(x, dict)})
        rows.append(obj)
        records.append(Record(id=str(obj["id"]), text="", spans=spans, labels=labels,
                              doc_id=obj.get("doc_id")))
    return rows, Corpus(records=records, path=path, format="instruction")


def sample_main(argv: Sequence[str]) -> int:
    from curation.readers.iob import format_iob
    from curation.sample import sampling_order, strata_counts, take

    cfg, _ = parse_config(SampleConfig, argv, "bioselect data sample",
                          positional={"path": {"help": "Corpus file (IOB, instruction JSONL, ...)."}})
    path = cfg.path
    fmt = cfg.format or detect_format(path)
    rows = None
    if fmt == "instruction":
        rows, corpus = _instruction_corpus(path)
    else:
        corpus = _read(path, cfg, fmt)
    outputs = []
    order = sampling_order(corpus.records, cfg.seed, unit=cfg.unit)
    with together():  # a whole ladder (every sample and manifest) lands at the end, or nothing does
        for frac, out in zip(cfg.ladder(), cfg.outputs(".tsv" if fmt == "iob" else ".jsonl"), strict=True):
            idx = take(order, frac)
            if not idx:
                raise InputError(path, f"fraction {frac} of {len(corpus.records)} records keeps none")
            kept = [corpus.records[i] for i in idx]
            if fmt == "iob":
                text = format_iob(kept, docstart=bool(corpus.meta.get("docstart")) and cfg.unit == "document")
                with atomic_write(out) as f:
                    f.write(text)
            elif rows is not None:
                write_jsonl(out, (rows[i] for i in idx))
            else:
                write_jsonl(out, (r.to_dict() for r in kept))
            write_json(f"{out}{MANIFEST}", provenance(
                cfg, [path], fraction=frac, records=len(kept), of=len(corpus.records),
                strata_kept=strata_counts(kept), strata_all=strata_counts(corpus.records),
                mentions=dict(Counter(s.label for r in kept for s in r.spans))))
            outputs.append((frac, len(kept), out))
    for frac, n, out in outputs:
        print(f"{frac:g}\t{n:,} of {len(corpus.records):,} records\t{out}")
    return 0


def split_main(argv: Sequence[str]) -> int:
    """Split one corpus file into train/dev/test by document (:func:`curation.splits.document_split`): the folder
    then reads as a corpus with its own split (``load_splits``, the combination search, ``tune experiment``)."""
    from curation.sample import strata_counts
    from curation.splits import document_split

    cfg, _ = parse_config(SplitConfig, argv, "bioselect data split",
                          positional={"path": {"help": "Corpus file to split (any format `bioselect data` reads)."}})
    shares = cfg.shares()
    out = Path(cfg.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "exists and is not an empty folder; split into a new folder")
    corpus = _read(cfg.path, cfg)
    parts = document_split(corpus.records, shares, cfg.seed)
    for name, idx in zip(("train", "dev", "test"), parts, strict=True):
        if not idx:
            raise InputError(cfg.path, f"the {name} share {shares[('train', 'dev', 'test').index(name)]:g} of its "
                                       f"{len(corpus.records)} records keeps no document; change --ratios")
    n_docs = len({r.doc_id if r.doc_id is not None else f"\0{i}" for i, r in enumerate(corpus.records)})
    with together():
        for name, idx, path in zip(("train", "dev", "test"), parts, cfg.outputs(), strict=True):
            kept = [corpus.records[i] for i in idx]
            write_jsonl(path, (r.to_dict() for r in kept))
            write_json(f"{path}{MANIFEST}", provenance(
                cfg, [cfg.path], split=name, records=len(kept), of=len(corpus.records), documents=n_docs,
                dataset=corpus.dataset, strata_kept=strata_counts(kept), strata_all=strata_counts(corpus.records),
                labels=dict(Counter(x for r in kept for x in r.labels)),
                mentions=dict(Counter(sp.label for r in kept for sp in r.spans))))
    for name, idx, path in zip(("train", "dev", "test"), parts, cfg.outputs(), strict=True):
        print(f"{name}\t{len(idx):,} of {len(corpus.records):,} records\t{path}")
    return 0


def export_main(argv: Sequence[str]) -> int:
    from curation.export import export, prediction_records

    cfg, _ = parse_config(ExportConfig, argv, "bioselect data export",
                          positional={"path": {"help": "Corpus file or folder, or predictions with --input."}})
    missing = 0
    if cfg.input:
        records, missing = prediction_records(cfg.path, cfg.input)
    else:
        try:
            fmt = cfg.format or detect_format(cfg.path)
        except InputError:
            first = next(read_jsonl(cfg.path), (0, {}))[1] if cfg.path.endswith((".jsonl", ".json")) else {}
            if {"id", "output"} <= set(first) and not {"text", "input"} & set(first):
                raise InputError(cfg.path, "looks like predictions; give --input, the instruction JSONL they were "
                                           "generated from") from None
            raise
        records = _read(cfg.path, cfg, fmt).records
    name = Path(cfg.path.rstrip("/")).stem or "records"
    with together():  # every document, the collection and the manifest land together or not at all
        written = export(records, cfg.to, cfg.output, name=name)
        write_json(Path(cfg.output) / "manifest.json", provenance(
            cfg, [cfg.path] + ([cfg.input] if cfg.input else []), to=cfg.to, records=len(records),
            inputs_without_prediction=missing if cfg.input else None,
            files=[str(p.relative_to(cfg.output)) for p in written]))
    print(f"wrote {len(records):,} records as {cfg.to} to {cfg.output} ({len(written):,} files)")
    if missing:
        print(f"{missing:,} records of {cfg.input} have no prediction and were not exported")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        print(f"usage: bioselect data {{{','.join(SUBCOMMANDS)}}} ... (see --help of each)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return {"stats": stats_main, "convert": convert_main, "sample": sample_main, "split": split_main,
            "export": export_main}[argv[0]](argv[1:])


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
