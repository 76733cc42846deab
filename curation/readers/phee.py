"""PHEE pharmacovigilance events (JSON lines, one sentence per line), read into spans and events.

A line is ``{"id", "context", "is_mult_event", "annotations": [{"events": [event, ...]}]}``. An event has
``event_id``, ``event_type`` (``Adverse_event`` or ``Potential_therapeutic_event``) and one dict per argument,
``{"text": [[fragment, ...], ...], "start": [[offset, ...], ...], "entity_id": [...]}``: one inner list per
argument instance, one string per fragment of a discontinuous instance. Main arguments (``Trigger``,
``Treatment``, ``Effect``, ``Subject``, ``Speculated``, ``Negated``, ``Severity``) nest sub-arguments
(``Treatment.Drug``, ``Treatment.Dosage``, ``Subject.Age``, ...) and ``Treatment.Combination``, a list of
sub-events ``{"event_type": "Combination", "Trigger", "Drug"}``.

How they map to a :class:`Record`:

* every fragment becomes a :class:`Span` labelled with its own role name (``"Trigger"``, ``"Treatment"``,
  ``"Drug"``, ``"Disorder"``, ``"Age"``, ...; the trigger of a combination is labelled ``"Combination"``);
  identical spans (same offsets and label, e.g. a drug named by both an event and its combination) are stored once;
* one :class:`Event` per event: ``trigger`` is the trigger's span index and ``arguments`` are ``(role path, span
  index)`` pairs in file order, where the role path names the nesting (``"Treatment"``, ``"Treatment.Drug"``,
  ``"Subject.Disorder"``, ``"Treatment.Combination"``, ``"Treatment.Combination.Drug"``), because ``Disorder``
  is both a treatment's indication and a subject's condition;
* ``meta["event_meta"]`` is parallel to ``Record.events``: the ``event_id``, attribute values (``Speculated``
  and ``Negated`` are ``True``, ``Severity`` is ``"High"``/``"Medium"``/``"Low"``), the combinations as
  ``{"event_id", "trigger", "drugs"}`` span indices, and ``discontinuous``: ``[role path, [span indices]]`` for
  each argument instance made of several fragments.

Every fragment is checked: ``context[start:start + len(text)] == text``.

    corpus = read_phee("../shared/data/ee/PHEE/dev.json")
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from curation.io import InputError, read_jsonl
from curation.records import Corpus, Event, Record, Span

_HEADER = ("event_id", "event_type")
_FIELDS = ("text", "start", "entity_id", "value")  # the plain fields of an argument


class _Builder:
    """Collects the deduplicated spans of one record and checks each fragment against the context."""

    def __init__(self, path: Path, line: int, rid: str, context: str):
        self.path, self.line, self.rid, self.context = path, line, rid, context
        self.spans: list[Span] = []
        self.index: dict[Span, int] = {}

    def fail(self, message: str) -> InputError:
        return InputError(self.path, message, line=self.line, record=self.rid)

    def instances(self, role: str, arg: Any, label: str) -> list[list[int]]:
        """Span indices of each instance of an argument dict (one list of fragment spans per instance)."""
        if not isinstance(arg, dict) or "text" not in arg or "start" not in arg:
            raise self.fail(f"argument {role!r} must be an object with 'text' and 'start'")
        texts, starts = arg["text"], arg["start"]
        if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
            raise self.fail(f"argument {role!r}: 'text' and 'start' must be lists of the same length")
        out = []
        for frag_texts, frag_starts in zip(texts, starts):
            if not isinstance(frag_texts, list) or not isinstance(frag_starts, list) \
                    or len(frag_texts) != len(frag_starts) or not frag_texts:
                raise self.fail(f"argument {role!r}: each instance needs as many fragment texts as starts")
            indices = []
            for text, start in zip(frag_texts, frag_starts):
                if not isinstance(text, str) or not text or not isinstance(start, int):
                    raise self.fail(f"argument {role!r}: fragment {text!r} at {start!r} is not a text and an offset")
                end = start + len(text)
                if start < 0 or end > len(self.context):
                    raise self.fail(f"argument {role!r}: {text!r} at [{start}, {end}) falls outside the context "
                                    f"(length {len(self.context)})")
                if self.context[start:end] != text:
                    raise self.fail(f"argument {role!r}: text {text!r} does not match the context at [{start}, {end}):"
                                    f" {self.context[start:end]!r}")
                span = Span(start, end, label)
                if span not in self.index:
                    self.index[span] = len(self.spans)
                    self.spans.append(span)
                indices.append(self.index[span])
            out.append(indices)
        return out


def _event(b: _Builder, ev: Any) -> tuple[Event, dict[str, Any]]:
    if not isinstance(ev, dict) or not all(k in ev for k in (*_HEADER, "Trigger")):
        raise b.fail("an event needs 'event_id', 'event_type' and 'Trigger'")
    info: dict[str, Any] = {"event_id": ev["event_id"]}
    arguments: list[tuple[str, int]] = []
    discontinuous: list[list] = []
    trigger = b.instances("Trigger", ev["Trigger"], "Trigger")
    flat = [i for inst in trigger for i in inst]
    arguments.extend(("Trigger", i) for i in flat[1:])

    def add(role_path: str, label: str, arg: dict) -> None:
        for inst in b.instances(role_path, arg, label):
            arguments.extend((role_path, i) for i in inst)
            if len(inst) > 1:
                discontinuous.append([role_path, inst])

    for role, arg in ev.items():
        if role in (*_HEADER, "Trigger"):
            continue
        if not isinstance(arg, dict):
            info[role] = arg
            continue
        add(role, role, arg)
        if "value" in arg:
            info[role] = arg["value"]
        for sub, sub_arg in arg.items():
            if sub == "Combination":
                if not isinstance(sub_arg, list):
                    raise b.fail(f"'{role}.Combination' must be a list of sub-events")
                for comb in sub_arg:
                    if not isinstance(comb, dict) or "Trigger" not in comb:
                        raise b.fail(f"'{role}.Combination' sub-event lacks a 'Trigger'")
                    ctrig = [i for inst in b.instances(f"{role}.Combination", comb["Trigger"], "Combination")
                             for i in inst]
                    arguments.extend((f"{role}.Combination", i) for i in ctrig)
                    drugs = []
                    for csub, carg in comb.items():
                        if not isinstance(carg, dict):
                            if csub not in _HEADER:
                                raise b.fail(f"'{role}.Combination' sub-event has an unknown field {csub!r}")
                        elif csub != "Trigger":
                            for inst in b.instances(f"{role}.Combination.{csub}", carg, csub):
                                arguments.extend((f"{role}.Combination.{csub}", i) for i in inst)
                                drugs.extend(inst)
                                if len(inst) > 1:
                                    discontinuous.append([f"{role}.Combination.{csub}", inst])
                    info.setdefault("combinations", []).append(
                        {"event_id": comb.get("event_id"), "trigger": ctrig, "drugs": drugs})
            elif isinstance(sub_arg, dict):
                add(f"{role}.{sub}", sub, sub_arg)
            elif sub not in _FIELDS:
                raise b.fail(f"argument {role!r} has an unknown field {sub!r}")
    if discontinuous:
        info["discontinuous"] = discontinuous
    return Event(type=str(ev["event_type"]), trigger=flat[0] if flat else None, arguments=tuple(arguments)), info


def read_phee(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a PHEE JSON-lines file into one record per sentence with its events (see the module docstring)."""
    path = Path(path)
    records: list[Record] = []
    seen: set[str] = set()
    for n, obj in read_jsonl(path):
        missing = [k for k in ("id", "context", "annotations") if k not in obj]
        if missing:
            raise InputError(path, f"PHEE line lacks {', '.join(missing)}", line=n)
        rid, context = str(obj["id"]), obj["context"]
        if rid in seen:
            raise InputError(path, f"duplicate id {rid!r}", line=n)
        seen.add(rid)
        if not isinstance(context, str) or not context:
            raise InputError(path, "'context' must be a non-empty string", line=n, record=rid)
        b = _Builder(path, n, rid, context)
        events, event_meta = [], []
        if not isinstance(obj["annotations"], list):
            raise b.fail("'annotations' must be a list")
        for ann in obj["annotations"]:
            if not isinstance(ann, dict) or not isinstance(ann.get("events"), list):
                raise b.fail("each annotation must be an object with an 'events' list")
            for ev in ann["events"]:
                event, info = _event(b, ev)
                events.append(event)
                event_meta.append(info)
        m = re.match(r"^(.+)_\d+$", rid)
        records.append(Record(id=rid, text=context, spans=b.spans, doc_id=m.group(1) if m else None, events=events,
                              meta={"event_meta": event_meta, "is_mult_event": obj.get("is_mult_event"), "line": n}))
    if not records:
        raise InputError(path, "no sentences found")
    return Corpus(records=records, path=str(path), format="phee", dataset=dataset or path.parent.name)
