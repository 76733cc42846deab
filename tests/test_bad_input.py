"""Every command against bad input, the project's rule: exit code 2 (130 for Ctrl-C), exactly one line on stderr that
names the offending file or option, no traceback, and every input file byte for byte as it was.

Run: ``pytest tests/test_bad_input.py -q``. Each row of :data:`ROWS` runs ``python -m curation.cli WORDS ...`` in a
process of its own (forked from :mod:`tests.cli_server`, which has the heavy libraries imported; the ``fs`` rows and
the Ctrl-C test start ``python`` itself) in one shared folder of small project-written inputs (built once by the
``work`` fixture) and checks the whole folder's SHA-256 afterwards. A new command joins by adding rows;
:func:`test_every_command_has_rows` fails until it has them. Rows marked ``fs="ro"`` or ``fs="full"`` write their
output onto a read-only or a nearly full tmpfs mounted in a private user and mount namespace (``unshare -Urm``); they
are skipped where that is not allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from curation.cli import COMMANDS
from tests.cli_server import CliServer
from tests.helpers import ASSETS, REPO

PYTHON = sys.executable


@dataclass(frozen=True)
class Row:
    """One bad invocation: the command words and arguments (``{w}`` is the work folder) and what the error line
    must name (``{w}`` too). ``fs``: ``"ro"``/``"full"`` put the folder ``{w}/mnt`` on a read-only / full tmpfs."""

    name: str
    argv: str
    names: str
    fs: str = ""


ROWS: list[Row] = [
    # --- data stats
    Row("stats missing file", "data stats {w}/nope.tsv", "{w}/nope.tsv"),
    Row("stats json is the corpus", "data stats {w}/corpus.tsv --json {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("stats json is a symlink to the corpus", "data stats {w}/corpus.tsv --json {w}/link.tsv", "{w}/link.tsv"),
    Row("stats json onto a folder", "data stats {w}/corpus.tsv --json {w}/folder", "{w}/folder"),
    Row("stats json under a file", "data stats {w}/corpus.tsv --json {w}/corpus.tsv/out.json", "corpus.tsv is a file"),
    Row("stats unknown format", "data stats {w}/corpus.tsv --format xml", "--format"),
    Row("stats missing config", "data stats {w}/corpus.tsv --config {w}/nope.yaml", "{w}/nope.yaml"),
    Row("stats config is a folder", "data stats {w}/corpus.tsv --config {w}/folder", "{w}/folder: is a folder"),
    Row("stats empty jsonl", "data stats {w}/empty.jsonl", "{w}/empty.jsonl: file is empty"),
    Row("stats unknown option", "data stats {w}/corpus.tsv --jsn out.json", "--jsn"),
    # --- data convert
    Row("convert onto its input", "data convert {w}/corpus.tsv --output {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("convert onto a hard link of its input", "data convert {w}/corpus.tsv --output {w}/hardlink.tsv",
        "{w}/hardlink.tsv"),
    Row("convert unknown task", "data convert {w}/corpus.tsv --task ner2 --output {w}/o.jsonl", "--task"),
    Row("convert without output", "data convert {w}/corpus.tsv", "--output"),
    Row("convert malformed IOB", "data convert {w}/bad.tsv --output {w}/o.jsonl", "{w}/bad.tsv:2"),
    Row("convert non-UTF-8", "data convert {w}/latin.tsv --output {w}/o.jsonl", "{w}/latin.tsv:1"),
    Row("convert malformed config", "data convert {w}/corpus.tsv --config {w}/malformed.yaml", "{w}/malformed.yaml:2"),
    Row("convert output under a file", "data convert {w}/corpus.tsv --output {w}/corpus.tsv/o.jsonl",
        "corpus.tsv is a file"),
    Row("convert onto a read-only file system", "data convert {w}/corpus.tsv --output {w}/mnt/o.jsonl",
        "{w}/mnt/o.jsonl: read-only file system", fs="ro"),
    Row("convert onto a disk that fills before the manifest", "data convert {w}/corpus.tsv --output {w}/mnt/o.jsonl",
        "{w}/mnt/o.jsonl.manifest.json: no space left on device", fs="full"),
    # --- data sample
    Row("sample onto its input", "data sample {w}/corpus.tsv --fraction 0.5 --output {w}/corpus.tsv",
        "{w}/corpus.tsv"),
    Row("sample onto a symlink to its input", "data sample {w}/corpus.tsv --fraction 0.5 --output {w}/link.tsv",
        "{w}/link.tsv"),
    Row("sample fraction above 1", "data sample {w}/corpus.tsv --fraction 1.5 --output {w}/o.tsv", "--fraction"),
    Row("sample ladder not numbers", "data sample {w}/corpus.tsv --fractions a,b --output {w}/ladder", "--fractions"),
    Row("sample ladder into its input", "data sample {w}/corpus.tsv --output {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("sample config value of the wrong type", "data sample {w}/corpus.tsv --config {w}/wrong_type.yaml",
        "{w}/wrong_type.yaml:1: seed"),
    Row("sample unknown unit", "data sample {w}/corpus.tsv --unit word --output {w}/o.tsv", "--unit"),
    Row("sample ladder onto a full disk", "data sample {w}/corpus.tsv --fractions 1,0.5 --output {w}/mnt/ladder",
        "no space left on device", fs="full"),
    # --- brat, BioC and BigBio input (any data subcommand)
    Row("stats brat offsets outside the text", "data stats {w}/brat_outside", "{w}/brat_outside/d.ann:2: fragment"),
    Row("stats brat quoted text differs", "data stats {w}/brat_quote", "{w}/brat_quote/d.ann:1: T1 quotes"),
    Row("stats brat ann without its txt", "data stats {w}/brat_no_txt", "{w}/brat_no_txt/d.ann: no d.txt"),
    Row("convert brat unknown annotation kind", "data convert {w}/brat_kind --output {w}/o.jsonl",
        "{w}/brat_kind/d.ann:2: unknown annotation kind"),
    Row("convert brat relation naming a missing T", "data convert {w}/brat_relation --task re --output {w}/o.jsonl",
        "{w}/brat_relation/d.ann:2: R1 argument Arg2 names T9"),
    Row("sample bioc location past its passage", "data sample {w}/bioc_past.xml --fraction 1 --output {w}/o.jsonl",
        "{w}/bioc_past.xml:22 (record d1): location [30, 39) of annotation 'A1' is empty or past its passage"),
    Row("stats bigbio text that differs", "data stats {w}/bigbio_text.jsonl",
        "{w}/bigbio_text.jsonl:1 (record doc1): entity 'e1'"),
    # --- data split
    Row("split without output", "data split {w}/corpus.tsv", "--output: is required"),
    Row("split ratios not numbers", "data split {w}/corpus.tsv --ratios 0.6,x,0.2 --output {w}/sp",
        "--ratios: expected comma-separated numbers"),
    Row("split two ratios", "data split {w}/corpus.tsv --ratios 0.8,0.2 --output {w}/sp",
        "--ratios: must be three positive shares summing to 1"),
    Row("split missing corpus", "data split {w}/nope.tsv --output {w}/sp", "{w}/nope.tsv"),
    Row("split onto its corpus file", "data split {w}/corpus.tsv --output {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("split into its corpus folder", "data split {w}/brat_good --output {w}/brat_good/split",
        "{w}/brat_good/split: is inside {w}/brat_good, an input of this command"),
    Row("split into a folder with files", "data split {w}/corpus.tsv --output {w}/old_export",
        "{w}/old_export: exists and is not an empty folder"),
    # --- data export
    Row("export without --to", "data export {w}/corpus.tsv --output {w}/x", "--to: is required"),
    Row("export to an unknown format", "data export {w}/corpus.tsv --to conll --output {w}/x", "--to"),
    Row("export without output", "data export {w}/corpus.tsv --to brat", "--output"),
    Row("export into its brat folder", "data export {w}/brat_good --to brat --output {w}/brat_good", "{w}/brat_good"),
    Row("export into a folder inside its brat folder", "data export {w}/brat_good --to brat --output "
        "{w}/brat_good/review", "{w}/brat_good/review: is inside {w}/brat_good, an input of this command"),
    Row("export onto a file", "data export {w}/corpus.tsv --to bioc --output {w}/hardlink.tsv", "{w}/hardlink.tsv"),
    Row("export predictions without their input", "data export {w}/pred_export.jsonl --to brat --output {w}/x",
        "{w}/pred_export.jsonl: looks like predictions"),
    Row("export a prediction of an unknown id", "data export {w}/pred_export_unknown.jsonl --input {w}/instr.jsonl "
        "--to brat --output {w}/x", "{w}/pred_export_unknown.jsonl:2: id 'nope' is not in"),
    Row("export a prediction without spans", "data export {w}/pred_unknown.jsonl --input {w}/instr.jsonl "
        "--to brat --output {w}/x", "{w}/pred_unknown.jsonl:1: a prediction needs 'id', 'output' and 'spans'"),
    Row("export into the folder of another export", "data export {w}/corpus.tsv --to brat --output {w}/old_export",
        "{w}/old_export/other.ann: is in the output folder but not part of this export"),
    Row("export a corpus with a bad brat file", "data export {w}/brat_quote --to bioc --output {w}/x",
        "{w}/brat_quote/d.ann:1"),
    Row("export onto a read-only file system", "data export {w}/corpus.tsv --to brat --output {w}/mnt/x",
        "read-only file system", fs="ro"),
    Row("export onto a full disk", "data export {w}/corpus.tsv --to bioc --output {w}/mnt/x",
        "no space left on device", fs="full"),
    # --- evaluate
    Row("evaluate onto its predictions", "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred.json "
        "--output {w}/pred.json", "{w}/pred.json"),
    Row("evaluate onto a symlink to its predictions",
        "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred.json --output {w}/pred_link.json", "{w}/pred_link.json"),
    Row("evaluate missing predictions", "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred_partial.jsonl "
        "--output {w}/e.json", "{w}/pred_partial.jsonl: 1 of 5 gold records have no prediction"),
    Row("evaluate unknown prediction id", "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred_unknown.jsonl "
        "--output {w}/e.json", "{w}/pred_unknown.jsonl:2"),
    Row("evaluate missing gold", "evaluate --gold {w}/nope.tsv --pred {w}/pred.json --output {w}/e.json",
        "{w}/nope.tsv"),
    Row("evaluate negative bootstrap", "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred.json --output {w}/e.json "
        "--bootstrap -1", "--bootstrap"),
    Row("evaluate output onto a folder", "evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred.json "
        "--output {w}/folder.json --allow-missing", "{w}/folder.json: is a folder"),
    Row("evaluate unknown config key", "evaluate --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml:2"),
    Row("evaluate unknown task", "evaluate --gold {w}/re_gold.jsonl --pred {w}/re_gold.jsonl --output {w}/e.json "
        "--task qa", "--task: must be one of ner, re, ee, tc"),
    Row("evaluate task other than the gold's", "evaluate --gold {w}/re_gold.jsonl --pred {w}/re_gold.jsonl "
        "--output {w}/e.json --task ner", "--task: is 'ner' but the gold records of {w}/re_gold.jsonl are 're'"),
    Row("evaluate gold mixing tasks", "evaluate --gold {w}/mixed_tasks.jsonl --pred {w}/re_gold.jsonl "
        "--output {w}/e.json", "{w}/mixed_tasks.jsonl:2 (record DDI-DrugBank.d1.s0): task 're', but record "
        "'tiny/0' is 'ner'"),
    Row("evaluate predictions of another task", "evaluate --gold {w}/re_gold.jsonl --pred {w}/re_pred_tc.jsonl "
        "--output {w}/e.json", "{w}/re_pred_tc.jsonl:1 (record DDI-DrugBank.d1.s0): a 'tc' prediction, but the gold "
        "records are scored as 're'"),
    Row("evaluate instruction without a label set", "evaluate --gold {w}/re_nolabels.jsonl --pred "
        "{w}/re_gold.jsonl --output {w}/e.json", "{w}/re_nolabels.jsonl:2 (record DDI-DrugBank.d1.s1): the "
        "instruction names no relation types"),
    Row("evaluate one dataset with two label sets", "evaluate --gold {w}/re_twolabels.jsonl --pred "
        "{w}/re_gold.jsonl --output {w}/e.json", "{w}/re_twolabels.jsonl:3 (record DDI-MedLine.d9.s0): the "
        "instruction names advise, effect, but record 'DDI-DrugBank.d1.s0' of the same dataset 'DDI' names DDI, "
        "advise, effect"),
    Row("evaluate relations with IOB predictions", "evaluate --gold {w}/re_gold.jsonl --pred {w}/corpus.tsv "
        "--output {w}/e.json", "{w}/corpus.tsv: IOB predictions hold entities only"),
    Row("evaluate tc gold with two labels", "evaluate --gold {w}/tc_two_labels.jsonl --pred "
        "{w}/tc_two_labels.jsonl --output {w}/e.json --task tc", "{w}/tc_two_labels.jsonl (record b): TC scores "
        "exactly one gold label per record; this record has 2 (ade, no_ade)"),
    # --- curate ifd
    Row("ifd missing model", "curate ifd --model {w}/no_model --input {w}/instr.jsonl --output {w}/s.jsonl",
        "{w}/no_model"),
    Row("ifd model without weights", "curate ifd --model {w}/model_no_weights --input {w}/instr.jsonl "
        "--output {w}/s.jsonl", "{w}/model_no_weights"),
    Row("ifd corrupt model", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl --output {w}/s.jsonl",
        "{w}/model_corrupt/config.json: not JSON"),
    Row("ifd truncated weights", "curate ifd --model {w}/model_truncated --input {w}/instr.jsonl "
        "--output {w}/s.jsonl", "{w}/model_truncated/model.safetensors: 1000 bytes, but its header describes"),
    Row("ifd model whose tokenizer does not load", "curate ifd --model {w}/model_no_tokenizer "
        "--input {w}/instr.jsonl --output {w}/s.jsonl", "{w}/model_no_tokenizer: cannot load the tokenizer"),
    Row("ifd onto its input", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/instr.jsonl", "{w}/instr.jsonl"),
    Row("ifd onto the model folder", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/model_corrupt", "{w}/model_corrupt"),
    Row("ifd zero batch", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl --output {w}/s.jsonl "
        "--batch-size 0", "--batch-size"),
    Row("ifd unknown prompt format", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/s.jsonl --prompt-format xml", "--prompt-format"),
    Row("ifd unknown token scope", "curate ifd --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/s.jsonl --tokens words", "--tokens"),
    Row("ifd unknown config key", "curate ifd --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("ifd missing input", "curate ifd --model {w}/model_no_tokenizer --input {w}/nope.jsonl --output {w}/s.jsonl",
        "{w}/nope.jsonl"),
    Row("ifd resumed over partial scores it did not write (a bad finished line)", "curate ifd --model "
        "{w}/model_tok --input {w}/instr.jsonl --output {w}/s_badline.jsonl",
        "{w}/s_badline.jsonl.partial-0:2: not a score line of curate ifd"),
    Row("ifd resumed over partial scores without their settings file", "curate ifd --model {w}/model_tok "
        "--input {w}/instr.jsonl --output {w}/s_nometa.jsonl",
        "{w}/s_nometa.jsonl.partial-*: partial scores without their .partial.json"),
    # --- curate filter
    Row("filter scores of another file", "curate filter --input {w}/instr.jsonl --scores {w}/scores_other.jsonl "
        "--output {w}/f.jsonl", "{w}/scores_other.jsonl: has no score for any of the 2 positive records"),
    Row("filter onto its scores", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/scores.jsonl", "{w}/scores.jsonl"),
    Row("filter onto its input", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/instr.jsonl", "{w}/instr.jsonl"),
    Row("filter ratio above 1", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/f.jsonl --ratio 2", "--ratio"),
    Row("filter unknown order", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/f.jsonl --order middle", "--order"),
    Row("filter unknown negative order", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/f.jsonl --negative-order longest", "--negative-order"),
    Row("filter malformed scores", "curate filter --input {w}/instr.jsonl --scores {w}/bad.jsonl "
        "--output {w}/f.jsonl", "{w}/bad.jsonl:2"),
    Row("filter onto a full disk", "curate filter --input {w}/instr.jsonl --scores {w}/scores.jsonl "
        "--output {w}/mnt/f.jsonl", "{w}/mnt/f.jsonl", fs="full"),
    # --- curate run
    Row("run unknown order", "curate run --model {w}/model_corrupt --input {w}/instr.jsonl --output {w}/f.jsonl "
        "--order middle", "--order"),
    Row("filter content scope with negatives by ifd", "curate filter --input {w}/instr.jsonl --scores "
        "{w}/scores.jsonl --output {w}/f.jsonl --tokens content --negative-order ifd", "--negative-order"),
    Row("run missing config", "curate run --config {w}/nope.yaml", "{w}/nope.yaml"),
    Row("run malformed config", "curate run --config {w}/malformed.yaml", "{w}/malformed.yaml"),
    Row("run unknown config key", "curate run --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("run config that is a list", "curate run --config {w}/list.yaml", "{w}/list.yaml"),
    Row("run missing model", "curate run --model {w}/no_model --input {w}/instr.jsonl --output {w}/f.jsonl",
        "{w}/no_model"),
    Row("run corrupt model", "curate run --model {w}/model_corrupt --input {w}/instr.jsonl --output {w}/f.jsonl",
        "{w}/model_corrupt/config.json: not JSON"),
    Row("run scores onto its input", "curate run --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/f.jsonl --scores {w}/instr.jsonl", "{w}/instr.jsonl"),
    Row("run onto its input", "curate run --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/instr.jsonl", "{w}/instr.jsonl"),
    # --- curate combos
    Row("combos unknown config key", "curate combos --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("combos missing config", "curate combos --config {w}/nope.yaml", "{w}/nope.yaml"),
    Row("combos into its data root", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/corpora", "{w}/corpora"),
    Row("combos unknown evaluator", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --evaluator svm", "--evaluator"),
    Row("combos unknown dataset", "curate combos --target a --datasets zz --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c", "zz"),
    Row("combos zero accumulation", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --evaluator lora --gradient-accumulation-steps 0",
        "--gradient-accumulation-steps: must be >= 1"),
    Row("combos negative ratio above 1", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --negative-ratio 1.5", "--negative-ratio"),
    Row("combos accumulation for the encoder", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --evaluator encoder --gradient-accumulation-steps 2",
        "--gradient-accumulation-steps: applies to the lora evaluator only"),
    Row("combos argument types for the encoder", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --evaluator encoder --argument-types free",
        "--argument-types: applies to the lora evaluator only"),
    Row("combos unknown argument types", "curate combos --target a --datasets b --data-root {w}/corpora "
        "--model {w}/model_corrupt --output {w}/c --evaluator lora --argument-types gold",
        "--argument-types: must be 'target' or 'free'"),
    Row("combos lora on a corpus of no task folder", "curate combos --target a --datasets b --data-root "
        "{w}/corpora --model {w}/model_corrupt --output {w}/c --evaluator lora", "{w}/corpora/a"),
    # --- mtl train
    Row("mtl train unknown config key", "mtl train --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("mtl train malformed config", "mtl train --config {w}/malformed.yaml", "{w}/malformed.yaml"),
    Row("mtl train into its corpus", "mtl train --corpus {w}/corpora/a --model {w}/model_corrupt "
        "--output {w}/corpora/a", "{w}/corpora/a"),
    Row("mtl train missing corpus", "mtl train --corpus {w}/nope --model {w}/model_corrupt --output {w}/m",
        "{w}/nope"),
    Row("mtl train truncated weights", "mtl train --corpus {w}/corpora/a --model {w}/model_truncated "
        "--output {w}/m", "{w}/model_truncated/model.safetensors"),
    Row("mtl train zero fraction", "mtl train --corpus {w}/corpora/a --model {w}/model_corrupt --output {w}/m "
        "--fraction 0", "--fraction"),
    # --- mtl study
    Row("mtl study unknown config key", "mtl study --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("mtl study into its corpus", "mtl study --corpus {w}/corpora/a --model {w}/model_corrupt "
        "--output {w}/corpora/a", "{w}/corpora/a"),
    Row("mtl study fractions not numbers", "mtl study --corpus {w}/corpora/a --model {w}/model_corrupt "
        "--output {w}/m --fractions x", "--fractions"),
    # --- mtl sru
    Row("mtl sru missing config", "mtl sru --config {w}/nope.yaml", "{w}/nope.yaml"),
    Row("mtl sru corpora without names", "mtl sru --corpora {w}/corpora/a --model {w}/model_corrupt "
        "--output {w}/m", "--corpora"),
    Row("mtl sru into its corpus", "mtl sru --corpora a={w}/corpora/a --model {w}/model_corrupt "
        "--output {w}/corpora/a", "{w}/corpora/a"),
    # --- mtl sru-report
    Row("sru-report unfinished run", "mtl sru-report {w}/corpora/a", "{w}/corpora/a"),
    Row("sru-report onto a run's metrics", "mtl sru-report {w}/run --output {w}/run/metrics.json",
        "{w}/run/metrics.json"),
    Row("sru-report unknown option", "mtl sru-report {w}/run --nesting", "--nesting"),
    # --- mtl qa
    Row("mtl qa unknown config key", "mtl qa --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("mtl qa into its corpus", "mtl qa --corpus {w}/corpus.tsv --model {w}/model_corrupt --output {w}/corpus.tsv",
        "{w}/corpus.tsv"),
    Row("mtl qa unknown variant", "mtl qa --corpus {w}/corpus.tsv --model {w}/model_corrupt --output {w}/q "
        "--variant both", "--variant"),
    # --- mtl qa-study
    Row("mtl qa-study malformed config", "mtl qa-study --config {w}/malformed.yaml", "{w}/malformed.yaml"),
    Row("mtl qa-study into its corpus", "mtl qa-study --corpus {w}/corpus.tsv --model {w}/model_corrupt "
        "--output {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("mtl qa-study unknown variants", "mtl qa-study --corpus {w}/corpus.tsv --model {w}/model_corrupt "
        "--output {w}/q --variants mtl,xx", "--variants"),
    # --- tune train
    Row("tune train unknown config key", "tune train --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("tune train missing config", "tune train --config {w}/nope.yaml", "{w}/nope.yaml"),
    Row("tune train into its training file", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/instr.jsonl", "{w}/instr.jsonl"),
    Row("tune train into the base model", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/model_corrupt", "{w}/model_corrupt"),
    Row("tune train missing model", "tune train --model {w}/no_model --train-files {w}/instr.jsonl "
        "--output-dir {w}/t", "{w}/no_model"),
    Row("tune train truncated weights", "tune train --model {w}/model_truncated --train-files {w}/instr.jsonl "
        "--output-dir {w}/t", "{w}/model_truncated/model.safetensors"),
    Row("tune train zero steps", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --max-steps 0", "--max-steps"),
    Row("tune train unknown trl optimizer", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --optim adamw_nope", "--optim: invalid choice: 'adamw_nope'"),
    Row("tune train unknown logging integration", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --report-to nope", "--report-to: unknown integration 'nope'"),
    Row("tune train zero batch", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --per-device-train-batch-size 0", "--per-device-train-batch-size: must be >= 1"),
    Row("tune train 4-bit and 8-bit together", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --load-in-4bit --load-in-8bit", "--load-in-8bit: give --load-in-4bit or --load-in-8bit"),
    Row("tune train unknown 4-bit type", "tune train --model {w}/model_corrupt --train-files {w}/instr.jsonl "
        "--output-dir {w}/t --load-in-4bit --bnb-4bit-quant-type int4", "--bnb-4bit-quant-type"),
    Row("tune train 4-bit on a model type bitsandbytes cannot quantise", "tune train --model {w}/model_falcon "
        "--train-files {w}/instr.jsonl --output-dir {w}/t --load-in-4bit",
        "{w}/model_falcon: bitsandbytes cannot quantise model type 'falcon'"),
    Row("tune train generation eval without an eval file", "tune train --model {w}/model_corrupt "
        "--train-files {w}/instr.jsonl --output-dir {w}/t --eval-generate true",
        "--eval-generate: needs --eval-file"),
    Row("tune train generation eval by another task's metric", "tune train --model {w}/model_llama "
        "--train-files {w}/instr.jsonl --output-dir {w}/t --eval-file {w}/re_gold.jsonl --eval-generate true "
        "--metric-for-best-model label_macro_f1", "'label_macro_f1' is not logged for the re"),
    Row("tune train best model by a metric never logged", "tune train --model {w}/model_corrupt "
        "--train-files {w}/instr.jsonl --output-dir {w}/t --eval-file {w}/instr.jsonl --eval-steps 1 "
        "--metric-for-best-model eval_bleu", "--metric-for-best-model: 'eval_bleu' is never logged"),
    Row("tune train best model by strict F1 without generation", "tune train --model {w}/model_corrupt "
        "--train-files {w}/instr.jsonl --output-dir {w}/t --eval-file {w}/instr.jsonl --eval-steps 1 "
        "--metric-for-best-model strict_f1", "--metric-for-best-model: 'strict_f1' is logged only with"),
    # --- tune generate
    Row("generate onto its input", "tune generate --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/instr.jsonl", "{w}/instr.jsonl"),
    Row("generate missing model", "tune generate --model {w}/no_model --input {w}/instr.jsonl --output {w}/p.jsonl "
        "--unconstrained", "{w}/no_model"),
    Row("generate corrupt model", "tune generate --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/p.jsonl --unconstrained", "{w}/model_corrupt/config.json: not JSON"),
    Row("generate truncated weights", "tune generate --model {w}/model_truncated --input {w}/instr.jsonl "
        "--output {w}/p.jsonl --unconstrained", "{w}/model_truncated/model.safetensors"),
    Row("generate missing input", "tune generate --model {w}/model_corrupt --input {w}/nope.jsonl "
        "--output {w}/p.jsonl", "{w}/nope.jsonl"),
    Row("generate resumed with other settings than its partial folder records", "tune generate --model "
        "{w}/model_llama --input {w}/instr.jsonl --output {w}/p_other.jsonl",
        "{w}/p_other.jsonl.parts/settings.json: a killed run with other settings"),
    Row("generate into a partial folder that tune generate did not make", "tune generate --model {w}/model_llama "
        "--input {w}/instr.jsonl --output {w}/p_foreign.jsonl",
        "{w}/p_foreign.jsonl.parts: not a partial folder of tune generate"),
    Row("generate resumed over a partial folder with a finished line it did not write", "tune generate --model "
        "{w}/model_llama --input {w}/instr.jsonl --output {w}/p_badline.jsonl",
        "{w}/p_badline.jsonl.parts/rank-0.jsonl:2: not a prediction line"),
    Row("generate an RE record whose instruction names no relation types", "tune generate --model "
        "{w}/model_corrupt --input {w}/re_nolabels.jsonl --output {w}/p.jsonl", "{w}/re_nolabels.jsonl:2"),
    Row("generate zero repetition penalty", "tune generate --model {w}/model_corrupt --input {w}/re_gold.jsonl "
        "--output {w}/g.jsonl --repetition-penalty 0", "--repetition-penalty: must be > 0"),
    Row("generate --labels over records of two tasks", "tune generate --model {w}/model_corrupt --input "
        "{w}/mixed_tasks.jsonl --output {w}/p.jsonl --labels Disease", "{w}/mixed_tasks.jsonl:2"),
    Row("generate 4-bit and 8-bit together", "tune generate --model {w}/model_corrupt --input {w}/instr.jsonl "
        "--output {w}/p.jsonl --load-in-4bit --load-in-8bit", "--load-in-8bit"),
    Row("generate 8-bit on a model type bitsandbytes cannot quantise", "tune generate --model {w}/model_falcon "
        "--input {w}/instr.jsonl --output {w}/p.jsonl --unconstrained --load-in-8bit",
        "{w}/model_falcon: bitsandbytes cannot quantise model type 'falcon'"),
    # --- tune export
    Row("tune export missing adapter", "tune export --adapter {w}/nope --output {w}/x",
        "{w}/nope: no such adapter folder"),
    Row("tune export a model folder as the adapter", "tune export --adapter {w}/model_llama --output {w}/x",
        "{w}/model_llama: not a PEFT adapter folder (no adapter_config.json)"),
    Row("tune export adapter without weights", "tune export --adapter {w}/adapter_no_weights --output {w}/x",
        "{w}/adapter_no_weights: adapter folder has no weights"),
    Row("tune export base model not found", "tune export --adapter {w}/adapter_lost --output {w}/x --merge",
        "{w}/no_model: no such model folder"),
    Row("tune export adapter that does not fit its base", "tune export --adapter {w}/adapter_wide --output {w}/x",
        "{w}/adapter_wide: adapter does not fit the model {w}/model_llama"),
    Row("tune export into a folder that is not empty", "tune export --adapter {w}/adapter_ok --output {w}/old_export",
        "{w}/old_export: exists and is not empty"),
    Row("tune export onto the adapter", "tune export --adapter {w}/adapter_ok --output {w}/adapter_ok",
        "{w}/adapter_ok: is an input of this command"),
    Row("tune export into the adapter", "tune export --adapter {w}/adapter_ok --output {w}/adapter_ok/merged",
        "{w}/adapter_ok/merged: is inside {w}/adapter_ok"),
    Row("tune export into the base model", "tune export --adapter {w}/adapter_ok --output {w}/model_llama/merged "
        "--merge", "{w}/model_llama/merged: is inside {w}/model_llama"),
    Row("tune export merged into 4 bits", "tune export --adapter {w}/adapter_ok --output {w}/x --merge "
        "--load-in-4bit", "--load-in-4bit: a quantised output cannot be merged into"),
    Row("tune export merged into a base saved in 4 bits", "tune export --adapter {w}/adapter_on_bnb4 --output {w}/x "
        "--merge", "{w}/model_bnb4: is saved quantised (bitsandbytes 4-bit)"),
    Row("tune export merged in an unknown dtype", "tune export --adapter {w}/adapter_ok --output {w}/x --merge "
        "--dtype float64", "--dtype: must be base"),
    Row("tune export a dtype without merging", "tune export --adapter {w}/adapter_ok --output {w}/x --dtype float32",
        "--dtype: sets the dtype of merged weights"),
    Row("tune export evaluation that is not one", "tune export --adapter {w}/adapter_ok --output {w}/x "
        "--eval {w}/instr.jsonl", "{w}/instr.jsonl: invalid JSON"),
    # --- tune evaluate
    Row("tune evaluate onto its predictions", "tune evaluate --gold {w}/scoring/gold.tsv --pred a={w}/pred.json "
        "--output {w}/pred.json", "{w}/pred.json"),
    Row("tune evaluate pred without a name", "tune evaluate --gold {w}/scoring/gold.tsv --pred {w}/pred.json "
        "--output {w}/c.json", "--pred"),
    Row("tune evaluate missing predictions", "tune evaluate --gold {w}/scoring/gold.tsv "
        "--pred a={w}/pred_partial.jsonl --output {w}/c.json", "{w}/pred_partial.jsonl"),
    Row("tune evaluate baseline that is not a model", "tune evaluate --gold {w}/scoring/gold.tsv "
        "--pred a={w}/pred.json b={w}/pred.json --baseline c --output {w}/cmp.json", "--baseline"),
    Row("tune evaluate unknown config key", "tune evaluate --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    # --- tune experiment
    Row("experiment unknown config key", "tune experiment --config {w}/unknown_key.yaml", "{w}/unknown_key.yaml"),
    Row("experiment into its corpus", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/corpus.tsv", "{w}/corpus.tsv"),
    Row("experiment missing corpus", "tune experiment --model {w}/model_corrupt --train {w}/nope.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x", "{w}/nope.tsv"),
    Row("experiment records without their runs", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/recorded", "{w}/recorded/records.json: lists 1 finished run(s)"),
    Row("experiment unknown arm", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --arms lora-xx", "--arms"),
    Row("experiment unknown tracker", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/corpus.tsv --output_dir {w}/e --report_to nope", "--report-to: unknown integration 'nope'"),
    Row("mtl train unknown tracker", "mtl train --corpus {w}/corpora/a --model {w}/model_corrupt --output {w}/m "
        "--report-to nope", "--report-to: one of none, tensorboard, mlflow"),
    Row("experiment rho above 1", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --ratios 0.5 1.5", "--ratios"),
    Row("experiment ladder arm that is not a ratio arm", "tune experiment --model {w}/model_corrupt --train "
        "{w}/corpus.tsv --test {w}/scoring/gold.tsv --output_dir {w}/x --ladder_arms lora-full", "--ladder_arms"),
    Row("experiment packing not a boolean", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --packing maybe", "--packing"),
    Row("experiment no seeds", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --seeds -1", "--seeds"),
    Row("experiment zero accumulation", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --gradient_accumulation_steps 0",
        "--gradient_accumulation_steps: must be at least 1, got 0"),
    Row("experiment epochs below 1", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --epochs 0.5", "--epochs"),
    Row("experiment other scorer missing", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --arms lora-ifd-other", "--other_scorer_model"),
    Row("experiment task the corpus lacks", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --task re", "{w}/corpus.tsv"),
    Row("experiment entity types the corpus outgrows", "tune experiment --model {w}/model_corrupt --train "
        "{w}/tiny.PubTator --test {w}/tiny.PubTator --output_dir {w}/x --task re --entity_types ChemicalEntity "
        "GeneOrGeneProduct", "{w}/tiny.PubTator"),
    Row("experiment roles the corpus outgrows", "tune experiment --model {w}/model_corrupt --train {w}/phee.json "
        "--test {w}/phee.json --output_dir {w}/x --task ee --roles Treatment", "{w}/phee.json"),
    Row("experiment entity types repeated", "tune experiment --model {w}/model_corrupt --train {w}/tiny.PubTator "
        "--test {w}/tiny.PubTator --output_dir {w}/x --task re --entity_types GeneOrGeneProduct GeneOrGeneProduct",
        "--entity_types"),
    Row("experiment entity types of an NER study", "tune experiment --model {w}/model_corrupt --train "
        "{w}/corpus.tsv --test {w}/scoring/gold.tsv --output_dir {w}/x --entity_types Disease", "--entity_types"),
    Row("experiment negatives of tc", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --output_dir {w}/x --task tc --negative_ratio 0.5", "--negative_ratio"),
    Row("experiment dev corpus into its output", "tune experiment --model {w}/model_corrupt --train {w}/corpus.tsv "
        "--test {w}/scoring/gold.tsv --dev {w}/corpus.tsv --arms lora-ifd-auto --output_dir {w}/corpus.tsv",
        "{w}/corpus.tsv"),
]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Small inputs of every kind the rows need (read-only for the rows: they must not change a byte)."""
    from curation.convert import convert_corpus
    from curation.readers import read_corpus

    w = tmp_path_factory.mktemp("bad-input")
    shutil.copy(ASSETS / "tiny_ncbi.tsv", w / "corpus.tsv")
    os.symlink(w / "corpus.tsv", w / "link.tsv")
    os.link(w / "corpus.tsv", w / "hardlink.tsv")
    (w / "folder").mkdir()
    (w / "folder.json").mkdir()
    (w / "mnt").mkdir()
    _write(w / "empty.jsonl", "")
    _write(w / "recorded/records.json", '{"runs": ["zero-shot"], "sha256": {}}')  # records copied without their runs
    _write(w / "bad.tsv", "a\tO\nb\tB_X\n\n")
    shutil.copy(ASSETS / "readers" / "tiny.PubTator", w / "tiny.PubTator")  # relations between 3 entity types
    shutil.copy(ASSETS / "readers" / "phee.json", w / "phee.json")  # events with a dozen argument roles
    (w / "latin.tsv").write_bytes(b"caf\xe9\tO\n\n")
    rows = convert_corpus(read_corpus(w / "corpus.tsv"), task="ner")
    _write(w / "instr.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    positives = [r["id"] for r in rows if r["output"] != "[]"]
    _write(w / "scores.jsonl", "".join(json.dumps({"id": i, "ifd": 0.5, "variant": "ppl_ratio"}) + "\n"
                                       for i in positives))
    _write(w / "scores_other.jsonl", json.dumps({"id": "other-1", "ifd": 0.5, "variant": "ppl_ratio"}) + "\n")
    _write(w / "bad.jsonl", '{"id": "a", "ifd": 0.5}\n{"id": \n')
    (w / "scoring").mkdir()  # the gold ids are "scoring/gold/N", after the folder, as the predictions name them
    shutil.copy(ASSETS / "scoring" / "gold.tsv", w / "scoring" / "gold.tsv")
    shutil.copy(ASSETS / "scoring" / "pred.jsonl", w / "pred.json")  # a 5-record gold, 4 predictions
    os.symlink(w / "pred.json", w / "pred_link.json")
    shutil.copy(ASSETS / "scoring" / "pred.jsonl", w / "pred_partial.jsonl")
    _write(w / "pred_unknown.jsonl", '{"id": "scoring/gold/0", "output": "[]"}\n{"id": "nope", "output": "[]"}\n')
    _write(w / "unknown_key.yaml", "# a recipe with a typo\nbogus_option: 1\n")
    _write(w / "malformed.yaml", "model: x\ninput: [unclosed\n")
    _write(w / "wrong_type.yaml", "seed: many\nfraction: 0.5\n")
    _write(w / "list.yaml", "- model\n- input\n")
    _write(w / "model_no_weights" / "config.json", '{"model_type": "llama"}\n')
    _write(w / "model_corrupt" / "config.json", '{"model_type": "llama", \n')
    (w / "model_corrupt" / "model.safetensors").write_bytes(b"\x00garbage")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    _write(w / "model_truncated" / "config.json", '{"model_type": "llama"}\n')  # a download cut short
    (w / "model_truncated" / "model.safetensors").write_bytes((len(header).to_bytes(8, "little") + header).ljust(
        1000, b"\0"))
    _write(w / "model_no_tokenizer" / "config.json", '{"model_type": "llama"}\n')  # weights intact, no tokenizer
    (w / "model_no_tokenizer" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    # a Falcon folder (intact weights framing): its linear layers are FalconLinear, which bitsandbytes leaves alone
    _write(w / "model_falcon" / "config.json", json.dumps({"model_type": "falcon", "hidden_size": 64,
                                                           "num_hidden_layers": 1, "num_attention_heads": 4,
                                                           "vocab_size": 128}) + "\n")
    (w / "model_falcon" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    # a tiny Llama (intact weights framing) and LoRA adapters for it: one that fits, one made for a wider model,
    # one without weights, one whose base is gone
    _write(w / "model_llama" / "config.json", json.dumps({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}) + "\n")
    (w / "model_llama" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    # the same Llama as a checkpoint saved in 4 bits (its config.json says so)
    _write(w / "model_bnb4" / "config.json", json.dumps({
        **json.loads((w / "model_llama" / "config.json").read_text()),
        "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}) + "\n")
    (w / "model_bnb4" / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")
    _write(w / "p_other.jsonl.parts" / "settings.json", json.dumps({"model": "another model"}))
    (w / "p_foreign.jsonl.parts").mkdir()
    # partial results of killed runs recorded with the settings of the rows that resume them, each with a finished
    # line the run did not write (and partial scores without the settings file a run writes first)
    from curation.ifd import IFDConfig
    from curation.ifd import run_settings as ifd_settings
    from tests.curation.test_ifd import make_tokenizer
    from tuning.generate import GenerateConfig
    from tuning.generate import run_settings as generate_settings

    shutil.copytree(w / "model_llama", w / "model_tok")
    make_tokenizer().save_pretrained(w / "model_tok")
    first = json.dumps({"id": rows[0]["id"], "ifd": 0.5}) + "\n"
    _write(w / "s_badline.jsonl.partial.json", json.dumps(ifd_settings(IFDConfig(
        model=str(w / "model_tok"), input=str(w / "instr.jsonl"), output=str(w / "s_badline.jsonl")))))
    _write(w / "s_badline.jsonl.partial-0", first + "scores follow\n")
    _write(w / "s_nometa.jsonl.partial-0", first)
    settings = generate_settings(GenerateConfig(model=str(w / "model_llama"), input=str(w / "instr.jsonl"),
                                                output=str(w / "p_badline.jsonl")), "float32", None)
    _write(w / "p_badline.jsonl.parts" / "settings.json", json.dumps(settings))
    _write(w / "p_badline.jsonl.parts" / "rank-0.jsonl", json.dumps({"id": rows[0]["id"], "output": "[]"}) + "\n"
           + '{"output": "[]"}\n')
    for name, width, base in (("adapter_ok", 32, "model_llama"), ("adapter_wide", 64, "model_llama"),
                              ("adapter_no_weights", 32, "model_llama"), ("adapter_lost", 32, "no_model"),
                              ("adapter_on_bnb4", 32, "model_bnb4")):
        _write(w / name / "adapter_config.json", json.dumps({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(w / base), "r": 4,
            "lora_alpha": 8, "target_modules": ["q_proj"]}) + "\n")
        if name != "adapter_no_weights":
            import torch
            from safetensors.torch import save_file

            key = "base_model.model.model.layers.0.self_attn.q_proj"
            save_file({f"{key}.lora_A.weight": torch.zeros(4, width), f"{key}.lora_B.weight": torch.zeros(32, 4)},
                      w / name / "adapter_model.safetensors")
    for name in ("a", "b"):  # two corpus folders under one data root
        (w / "corpora" / name).mkdir(parents=True)
        for split in ("train", "dev", "test"):
            shutil.copy(ASSETS / "tiny_ncbi.tsv", w / "corpora" / name / f"{split}.tsv")
    _write(w / "run" / "metrics.json", json.dumps({"datasets": []}) + "\n")
    for name, ann in {"brat_good": "T1\tGene 0 5\tNaïve\n", "brat_outside": "T1\tGene 0 5\tNaïve\nT2\tGene 9 99\tx\n",
                      "brat_quote": "T1\tGene 0 5\tNaive\n", "brat_kind": "T1\tGene 0 5\tNaïve\nX1\tGene T1\n",
                      "brat_relation": "T1\tGene 0 5\tNaïve\nR1\tRel Arg1:T1 Arg2:T9\n"}.items():
        _write(w / name / "d.txt", "Naïve T-cells\n")
        _write(w / name / "d.ann", ann)
    _write(w / "brat_no_txt" / "d.ann", "T1\tGene 0 5\tNaïve\n")
    bioc = (ASSETS / "readers" / "bioc" / "tiny.xml").read_text(encoding="utf-8")
    _write(w / "bioc_past.xml", bioc.replace('offset="22" length="3"', 'offset="30" length="9"'))
    bigbio = (ASSETS / "readers" / "bigbio" / "tiny.jsonl").read_text(encoding="utf-8")
    _write(w / "bigbio_text.jsonl", bigbio.replace('"text": ["Naïve T-cells"]', '"text": ["Naive T-cells"]', 1))
    _write(w / "pred_export.jsonl", json.dumps({"id": rows[0]["id"], "output": "[]", "spans": []}) + "\n")
    _write(w / "pred_export_unknown.jsonl", json.dumps({"id": rows[0]["id"], "output": "[]", "spans": []}) + "\n"
           + json.dumps({"id": "nope", "output": "[]", "spans": []}) + "\n")
    _write(w / "old_export" / "other.ann", "T1\tGene 0 5\tNaïve\n")
    re_rows = convert_corpus(read_corpus(ASSETS / "readers" / "ddi"), task="re")  # 3 records, dataset DDI
    _write(w / "re_gold.jsonl", "".join(json.dumps(r) + "\n" for r in re_rows))
    _write(w / "mixed_tasks.jsonl", "".join(json.dumps(r) + "\n" for r in [{**rows[0], "id": "tiny/0"}, *re_rows]))
    _write(w / "re_pred_tc.jsonl", "".join(json.dumps({"id": r["id"], "output": r["output"], "task": "tc"}) + "\n"
                                           for r in re_rows))
    _write(w / "re_nolabels.jsonl", "".join(json.dumps({**r, "instruction": "Find the relations."} if i == 1 else r)
                                            + "\n" for i, r in enumerate(re_rows)))
    other = re_rows[0]["instruction"].replace("relations: DDI, advise, effect.", "relations: advise, effect.")
    _write(w / "re_twolabels.jsonl", "".join(json.dumps({**r, "instruction": other} if i == 2 else r) + "\n"
                                             for i, r in enumerate(re_rows)))
    _write(w / "tc_two_labels.jsonl", '{"id": "a", "text": "x", "labels": ["ade"]}\n'
                                      '{"id": "b", "text": "y", "labels": ["ade", "no_ade"]}\n')
    return w


def snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (symlinks by their own target path)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p)] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    return probe.returncode == 0


def command(argv: list[str], fs: str = "") -> list[str]:
    """The command line of one row: ``python -m curation.cli ...``; with ``fs`` (``ro`` or ``full``: one 4 KiB
    page), inside a private user and mount namespace with a tmpfs on ``$MNT`` that lists what is left on it after
    the run."""
    cmd = [PYTHON, "-m", "curation.cli", *argv]
    if not fs:
        return cmd
    options = "ro,size=64k" if fs == "ro" else "size=4k"
    script = (f'mount -t tmpfs -o {options} none "$MNT" || exit 99; "$@"; rc=$?; '
              'echo "left: $(find "$MNT" -mindepth 1 ! -type d)"; exit $rc')
    return ["unshare", "-Urm", "sh", "-c", script, "sh", *cmd]


def row_env(w: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "MNT": str(w / "mnt"), "OMP_NUM_THREADS": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def cli(work):
    """The fork server the rows without ``fs`` run in (:mod:`tests.cli_server`: each row its own process, without
    seven seconds of imports each)."""
    with CliServer(row_env(work)) as server:
        yield server


def run_row(row: Row, w: Path, cli: CliServer) -> subprocess.CompletedProcess:
    argv = row.argv.format(w=w).split()
    if not row.fs:
        return cli.run(argv, cwd=w)
    return subprocess.run(command(argv, row.fs), capture_output=True, text=True, env=row_env(w), cwd=w, timeout=300)


def check_one_line(proc: subprocess.CompletedProcess, names: str, code: int = 2) -> str:
    err = proc.stderr
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert proc.returncode == code and len(lines) == 1, (proc.returncode, err)
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_bad_input_is_one_line_and_changes_nothing(row, work, cli):
    if row.fs and not _unshare_works():
        pytest.skip("unshare -Urm (a private mount namespace for a read-only or full tmpfs) is not allowed here")
    before = snapshot(work)
    proc = run_row(row, work, cli)
    check_one_line(proc, row.names.format(w=work))
    assert snapshot(work) == before  # no input changed, nothing new written
    if row.fs:
        assert proc.stdout.splitlines()[-1] == "left: ", proc.stdout  # no output, manifest or temporary file


def test_every_command_has_rows():
    covered = {tuple(w for w in row.argv.split()[:2] if not w.startswith(("-", "{"))) for row in ROWS}
    missing = [" ".join(words) for words in COMMANDS if not any(c[:len(words)] == words for c in covered)]
    assert not missing, f"commands without bad-input rows: {missing}"
    for sub in ("stats", "convert", "sample"):
        assert any(row.argv.startswith(f"data {sub} ") for row in ROWS), sub
    assert len(ROWS) >= 60


# --- Ctrl-C and kill -9 ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_leaves_what_a_kill_leaves(tmp_path):
    """SIGINT in the middle of ``curate ifd``: exit code 130, one line, the input unchanged, no scores file, and the
    partial scores kept for the next run to resume from (as after ``kill -9``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.curation.test_ifd import make_records, make_tokenizer, write_jsonl

    model = tmp_path / "tiny-llama"
    tokenizer = make_tokenizer()
    tokenizer.save_pretrained(model)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=0)).save_pretrained(model)
    data = write_jsonl(tmp_path / "in.jsonl", make_records(600, seed=1))
    before = hashlib.sha256(data.read_bytes()).hexdigest()
    out = tmp_path / "scores.jsonl"
    part = tmp_path / "scores.jsonl.partial-0"
    cmd = [PYTHON, "-m", "curation.cli", "curate", "ifd", "--model", str(model), "--input", str(data),
           "--output", str(out), "--chunk-size", "4", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # SIGINT's default action in the child: a shell ignores SIGINT in what it starts in the background (`make test &`)
    # and the ignore is inherited, so the command would never see the interruption this test sends
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline and not (part.exists() and part.stat().st_size):
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # before the interruption a working run printed what it prints (the weights' loading bar): the error is the last
    # line and the only one
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == stderr.splitlines()[-1:] and errors[0].startswith("error: interrupted (SIGINT)"), stderr
    assert hashlib.sha256(data.read_bytes()).hexdigest() == before
    assert not out.exists() and not out.with_name(out.name + ".manifest.json").exists()
    assert 0 < part.read_bytes().count(b"\n") < 600  # what a kill leaves: the scores so far, for the next run


def test_the_next_run_removes_what_a_killed_write_left(tmp_path):
    """A writer killed with SIGKILL inside :func:`curation.io.atomic_write` leaves its temporary file; the next run
    writing the same output removes it (a live writer's temporary file is left alone)."""
    from curation.data import main as data_main

    out = tmp_path / "out.jsonl"
    killed = ("import os, signal, sys; from curation.io import atomic_write\n"
              "with atomic_write(sys.argv[1]) as f:\n"
              "    f.write('half a line'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([PYTHON, "-c", killed, str(out)], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".out.jsonl.*.tmp"))
    assert len(left) == 1 and left[0].read_text() == "half a line" and not out.exists()
    live = tmp_path / f".out.jsonl.{os.getpid()}-live.tmp"  # a writer that is still running (this process)
    live.write_text("in progress")
    assert data_main(["convert", str(ASSETS / "tiny_ncbi.tsv"), "--output", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "out.jsonl", "out.jsonl.manifest.json"])
    assert len(out.read_text().splitlines()) == 3
