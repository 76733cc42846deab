"""Corpus statistics: sentences, documents, mentions per type, duplicates, relations, events, labels.

    >>> from curation.records import Corpus, Record, Span
    >>> c = Corpus([Record(id="a", text="x y", spans=[Span(0, 1, "A")]), Record(id="b", text="x y")])
    >>> corpus_stats(c)["duplicates"]
    1
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from curation.records import Corpus


def corpus_stats(corpus: Corpus) -> dict[str, Any]:
    """Counts for one corpus file.

    ``duplicates`` counts records whose token sequence (or text, when untokenised) already occurred earlier in the
    same file, i.e. records minus distinct sentences, the definition used in ``../shared/data/README.md``.
    """
    recs = corpus.records
    docs = {r.doc_id for r in recs if r.doc_id is not None}
    seen = Counter(tuple(r.tokens) if r.tokens is not None else (r.question, r.text) for r in recs)
    out: dict[str, Any] = {
        "path": corpus.path,
        "format": corpus.format,
        "dataset": corpus.dataset,
        "sentences": len(recs),
        "documents": len(docs) if docs else None,
        "with_mentions": sum(1 for r in recs if r.spans),
        "mentions": dict(sorted(Counter(s.label for r in recs for s in r.spans).items())),
        "duplicates": sum(v - 1 for v in seen.values()),
    }
    out["mentions_total"] = sum(out["mentions"].values())
    rels = Counter(rel.label for r in recs for rel in r.relations)
    if rels:
        out["relations"] = dict(sorted(rels.items()))
    events = Counter(e.type for r in recs for e in r.events)
    if events:
        out["events"] = dict(sorted(events.items()))
    labels = Counter(lab for r in recs for lab in r.labels)
    if labels:
        out["labels"] = dict(sorted(labels.items()))
    questions = sum(1 for r in recs if r.question is not None)
    if questions:
        out["questions"] = questions
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """A short human-readable block for one file."""
    lines = [f"{stats['path']} ({stats['format']}, dataset {stats['dataset']})"]
    docs = stats["documents"]
    lines.append(f"  sentences {stats['sentences']:,}  documents {docs:,}" if docs else
                 f"  sentences {stats['sentences']:,}  documents -")
    lines.append(f"  with mentions {stats['with_mentions']:,}  mentions {stats['mentions_total']:,}"
                 f"  duplicates {stats['duplicates']:,}")
    for key in ("mentions", "relations", "events", "labels"):
        if stats.get(key):
            lines.append(f"  {key}: " + ", ".join(f"{k} {v:,}" for k, v in stats[key].items()))
    if stats.get("questions"):
        lines.append(f"  questions {stats['questions']:,}")
    return "\n".join(lines)
