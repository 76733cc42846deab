"""Hybrid Superfiltering selection: the pure rules, and ``bioselect curate filter`` on hand-written scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.filter import FilterConfig, main, select, share, tally
from curation.io import InputError

INSTR = "Find diseases."


def rec(rid: str, output: str = '[{"entity": "Disease", "name": "gout"}]', dataset: str = "A") -> dict:
    return {"id": rid, "instruction": INSTR, "input": f"text {rid}", "output": output, "dataset": dataset}


def test_top_ratio_of_positives_below_one():
    rows = [rec(f"p{i}") for i in range(6)] + [rec("n0", "[]"), rec("n1", "[ ]")]
    scores = {"p0": 0.2, "p1": 0.9, "p2": 1.5, "p3": 0.7, "p4": 0.95, "p5": 0.7}
    fate = select(rows, scores, ratio=0.5)
    # 6 positives -> keep 3: p4 (0.95), p1 (0.9), then p3 (0.7, before p5 in input order); p2 has IFD > 1
    assert fate == ["below_cut", "kept", "ifd_above_max", "kept", "kept", "below_cut", "kept", "kept"]


def test_count_keep_high_ifd_and_threshold():
    rows = [rec(f"p{i}") for i in range(4)]
    scores = {"p0": 0.2, "p1": 1.3, "p2": 0.8, "p3": 1.1}
    assert select(rows, scores, count=1) == ["below_cut", "ifd_above_max", "kept", "ifd_above_max"]
    assert select(rows, scores, count=2, keep_high_ifd=True) == ["below_cut", "kept", "below_cut", "kept"]
    assert select(rows, scores, count=3, max_ifd=1.2) == ["kept", "ifd_above_max", "kept", "kept"]
    assert select(rows, scores, count=10).count("kept") == 2  # fewer candidates than asked


def test_unscored_invalid_and_duplicates_are_dropped():
    rows = [rec("a"), rec("b"), rec("a"), {"id": "c", "instruction": INSTR}, rec("d", "")]
    fate = select(rows, {"a": 0.5, "b": None}, ratio=1.0)
    assert fate == ["kept", "unscored", "duplicate_id", "invalid", "invalid"]


def test_negative_share_is_seeded():
    rows = [rec(f"n{i}", "[]") for i in range(10)]
    a = select(rows, {}, negative_ratio=0.3, seed=1)
    assert a.count("kept") == 3 and a == select(rows, {}, negative_ratio=0.3, seed=1)
    assert a != select(rows, {}, negative_ratio=0.3, seed=2)
    assert select(rows, {}, negative_ratio=0.0).count("kept") == 0


def test_share_and_tally():
    assert [share(0.1, 30), share(0.7, 10), share(0.5, 5)] == [3, 7, 2]
    rows = [rec("a", dataset="A"), rec("b", "[]", dataset="A"), rec("c", dataset="B")]
    counts = tally(rows, ["kept", "negative_sampled_out", "below_cut"])
    assert counts == {"A": {"positive": {"kept": 1, "dropped": 0},
                            "negative": {"kept": 0, "dropped": 1, "dropped_negative_sampled_out": 1}},
                      "B": {"positive": {"kept": 0, "dropped": 1, "dropped_below_cut": 1}}}


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    rows = [rec(f"a{i}", dataset="A") for i in range(4)] + [rec("an", "[]", dataset="A")]
    rows += [rec(f"b{i}", dataset="B") for i in range(4)] + [rec("bn", "[]", dataset="B")]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ifd = {"a0": 0.1, "a1": 0.8, "a2": 1.2, "a3": 0.5, "b0": 0.9, "b1": 0.3, "b2": 0.6}  # b3 was not scored
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"id": k, "ifd": v, "variant": "ppl_ratio"}) + "\n" for k, v in ifd.items()))
    (tmp_path / "scores.jsonl.manifest.json").write_text(json.dumps({"model": "smollm2", "prompt_format": "plain",
                                                                     "max_length": 1024}))
    return data, scores


def test_command_writes_filtered_manifest_and_histogram(files, tmp_path, capsys):
    data, scores = files
    out = tmp_path / "kept.jsonl"
    assert main(["--input", str(data), "--scores", str(scores), "--output", str(out), "--ratio", "0.5"]) == 0
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    # 8 positives -> 4: b0 0.9, a1 0.8, b2 0.6, a3 0.5; a2 (1.2) dropped, b3 unscored; both negatives kept
    assert [r["id"] for r in kept] == ["a1", "a3", "an", "b0", "b2", "bn"]
    assert kept[0] == json.loads(data.read_text().splitlines()[1])
    m = json.loads((tmp_path / "kept.jsonl.manifest.json").read_text())
    assert (m["model"], m["prompt_format"], m["max_length"], m["variant"]) == ("smollm2", "plain", 1024, "ppl_ratio")
    assert m["thresholds"]["positives_to_keep"] == 4 and m["thresholds"]["max_ifd"] == 1.0
    assert m["counts"]["A"]["positive"] == {"kept": 2, "dropped": 2, "dropped_below_cut": 1,
                                            "dropped_ifd_above_max": 1}
    assert m["counts"]["B"]["negative"] == {"kept": 1, "dropped": 0}
    assert m["ifd_above_max"] == ["a2"] and m["unscored"] == ["b3"]
    assert set(m["inputs"]) == {str(data), str(scores)}
    assert (tmp_path / "kept.jsonl.ifd.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "kept 6 of 10 records" in captured.out
    assert captured.err == (f"warning: {scores}: no usable score for 1 of 8 positive records of {data}; they were "
                            "dropped (listed under 'unscored' in the manifest)\n")


def test_scores_of_another_file_are_refused(files, tmp_path, capsys):
    data, scores = files
    scores.write_text("".join(json.dumps({"id": f"other{i}", "ifd": 0.5}) + "\n" for i in range(3)))
    out = tmp_path / "kept.jsonl"
    assert main(["--input", str(data), "--scores", str(scores), "--output", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {scores}: has no score for any of the 8 positive records of {data} "
                                       "(no id matches): scores of another file?\n")
    assert not out.exists()


def test_command_reports_unusable_records(files, tmp_path, capsys):
    data, scores = files
    with open(data, "a") as f:
        f.write(json.dumps(rec("a0")) + "\n" + json.dumps({"id": "x", "instruction": INSTR}) + "\n")
    out = tmp_path / "kept.jsonl"
    assert main(["--input", str(data), "--scores", str(scores), "--output", str(out), "--count", "2"]) == 0
    err = capsys.readouterr().err
    assert "in.jsonl:11 (record a0): duplicate id; dropped" in err and "(record x): lacks 'output'" in err
    assert len(json.loads((tmp_path / "kept.jsonl.manifest.json").read_text())["unusable"]) == 2


@pytest.mark.parametrize("scores_text,message", [
    ('{"id": "a0"}\n', "needs 'id' and 'ifd'"),
    ('{"id": "a0", "ifd": "high"}\n', "not a number"),
    ('{"id": "a0", "ifd": 0.1, "variant": "ppl_ratio"}\n{"id": "a1", "ifd": 0.1, "variant": "loss_ratio"}\n',
     "mixes IFD variants"),
    ('{"id": "a0", "ifd": 0.1, "tokens": "content"}\n{"id": "a1", "ifd": 0.1, "tokens": "answer"}\n',
     "mixes token scopes ['answer', 'content']"),
    ('{"id": "a0", "ifd": 0.1, "tokens": "content"}\n{"id": "a1", "ifd": 0.1}\n',  # no scope named: answer
     "mixes token scopes ['answer', 'content']"),
])
def test_bad_scores_exit_2(files, tmp_path, capsys, scores_text, message):
    data, scores = files
    scores.write_text(scores_text)
    assert main(["--input", str(data), "--scores", str(scores), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_token_scope_is_named_and_checked(files, tmp_path, capsys):
    data, scores = files
    out = tmp_path / "kept.jsonl"
    args = ["--input", str(data), "--scores", str(scores), "--output", str(out)]
    assert main(args) == 0  # lines that name no scope were computed over the whole answer
    assert json.loads((tmp_path / "kept.jsonl.manifest.json").read_text())["tokens"] == "answer"
    assert main([*args, "--tokens", "content"]) == 2
    assert "scores are over the answer tokens, not --tokens content" in capsys.readouterr().err
    rows = [json.loads(line) | {"tokens": "content"} for line in scores.read_text().splitlines()]
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main([*args, "--tokens", "content"]) == 0
    assert json.loads((tmp_path / "kept.jsonl.manifest.json").read_text())["tokens"] == "content"
    assert main([*args, "--tokens", "answer"]) == 2
    # negatives have no content tokens, so no content IFD to rank them by
    assert main([*args, "--negative-order", "ifd", "--negative-ratio", "0.5"]) == 2
    assert "under --tokens content a negative ([]) has no content token" in capsys.readouterr().err
    assert main([*args, "--tokens", "content", "--negative-order", "ifd"]) == 2


@pytest.mark.parametrize("option", [["--ratio", "1.5"], ["--count", "-1"], ["--negative-ratio", "2"]])
def test_bad_options_exit_2(files, tmp_path, option):
    data, scores = files
    assert main(["--input", str(data), "--scores", str(scores), "--output", str(tmp_path / "o.jsonl"), *option]) == 2


def test_missing_input_exits_2(files, tmp_path):
    _, scores = files
    assert main(["--input", str(tmp_path / "no.jsonl"), "--scores", str(scores), "--output", "o.jsonl"]) == 2


def test_orders_draw_as_many_positives_from_the_same_candidates_with_the_same_negatives():
    rows = [{"id": f"p{i}", "instruction": "Find.", "output": f'[{{"name": "x{i}"}}]'} for i in range(20)]
    rows += [{"id": f"n{i}", "instruction": "Find.", "output": "[]"} for i in range(10)]
    scores = {f"p{i}": i / 20 for i in range(19)} | {"p19": 1.5} | {f"n{i}": i / 10 for i in range(10)}
    fates = {o: select(rows, scores, ratio=0.25, negative_ratio=0.5, seed=3, order=o)
             for o in ("top", "bottom", "random")}
    kept = {o: {rows[i]["id"] for i, f in enumerate(fate) if f == "kept"} for o, fate in fates.items()}
    positives = {o: {k for k in ids if k.startswith("p")} for o, ids in kept.items()}
    assert positives["top"] == {"p18", "p17", "p16", "p15", "p14"}  # p19 is above max_ifd
    assert positives["bottom"] == {"p0", "p1", "p2", "p3", "p4"}
    assert len(positives["random"]) == 5 and "p19" not in positives["random"]
    assert positives["random"] != positives["top"] and positives["random"] != positives["bottom"]
    negatives = {o: ids - positives[o] for o, ids in kept.items()}
    assert negatives["top"] == negatives["bottom"] == negatives["random"] and len(negatives["top"]) == 5
    other_seed = select(rows, scores, ratio=0.25, negative_ratio=0.5, seed=4, order="random")
    assert {rows[i]["id"] for i, f in enumerate(other_seed) if f == "kept"} != kept["random"]
    by_ifd = select(rows, scores, ratio=0.25, negative_ratio=0.5, negative_order="ifd")
    assert {rows[i]["id"] for i, f in enumerate(by_ifd) if f == "kept" and rows[i]["id"].startswith("n")} == {
        "n5", "n6", "n7", "n8", "n9"}
    unscored = select(rows, {k: v for k, v in scores.items() if k != "n9"}, negative_ratio=0.5, negative_order="ifd")
    assert unscored[-1] == "unscored"


def test_matched_order_draws_the_top_selections_answer_sizes_at_random():
    from collections import Counter

    # 40 positives: sentence i has 1 + i % 4 mentions; IFD rises with the mention count (so the top keeps long answers)
    def answer(n):
        return json.dumps([{"entity": "Disease", "name": f"d{k}"} for k in range(n)])

    rows = [{"id": f"p{i}", "instruction": "Find.", "output": answer(1 + i % 4)} for i in range(40)]
    rows += [{"id": f"n{i}", "instruction": "Find.", "output": "[]"} for i in range(12)]
    scores = {f"p{i}": (i % 4) / 4 + i / 1000 for i in range(40)}

    def kept(order, seed=0):
        fate = select(rows, scores, ratio=0.25, negative_ratio=0.5, seed=seed, order=order)
        return [r for r, f in zip(rows, fate, strict=True) if f == "kept"]

    def sizes(kept_rows):
        return Counter(len(json.loads(r["output"])) for r in kept_rows if r["id"].startswith("p"))

    top, matched, rand = kept("top"), kept("matched"), kept("random")
    assert sizes(top) == {4: 10}  # the ten 4-mention sentences have the highest IFD
    assert sizes(matched) == sizes(top) and sizes(rand) != sizes(top)
    assert sum(k * v for k, v in sizes(matched).items()) == 40  # as many mentions as the IFD selection
    ids = {o: {r["id"] for r in k} for o, k in (("top", top), ("matched", matched), ("random", rand))}
    assert {i for i in ids["matched"] if i.startswith("n")} == {i for i in ids["top"] if i.startswith("n")}
    # ratio 0.3 (12 positives): the top keeps the ten 4-mention sentences and the two best 3-mention ones; matched
    # keeps all ten 4-mention ones and draws two of the ten 3-mention ones by the seed
    mixed = {s: select(rows, scores, ratio=0.3, seed=s, order="matched") for s in (0, 1)}
    picked = {s: {rows[i]["id"] for i, f in enumerate(fate) if f == "kept" and rows[i]["id"].startswith("p")}
              for s, fate in mixed.items()}
    assert sizes([r for r in rows if r["id"] in picked[0]]) == {4: 10, 3: 2}
    assert picked[0] != picked[1]  # the two 3-mention records are drawn by the seed
    assert all(f in ("kept", "not_sampled") for f in mixed[0][:40])
    # TC: the stratum is the label
    tc = [{"id": f"t{i}", "instruction": "Classify.", "output": json.dumps({"label": "ab"[i % 2]})} for i in range(8)]
    tc_scores = {f"t{i}": (0.9 if i % 2 else 0.1) + i / 100 for i in range(8)}
    fate = select(tc, tc_scores, ratio=0.5, order="matched")
    assert [json.loads(r["output"])["label"] for r, f in zip(tc, fate, strict=True) if f == "kept"] == ["b"] * 4


def test_bad_order_is_refused(tmp_path):
    with pytest.raises(InputError, match="--order"):
        FilterConfig(input="a", scores="b", output=str(tmp_path / "c"), order="middle")
