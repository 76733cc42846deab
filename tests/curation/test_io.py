"""The output side of the bad-input rule (:mod:`curation.io`, :mod:`curation.cli`): outputs that land together or
not at all, write errors in plain words, an output that is an input refused, config files checked key by key.

Run: ``pytest tests/curation/test_io.py -q``
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from curation.cli import parse_config, run
from curation.io import (
    Files,
    InputError,
    OutputError,
    atomic_folder,
    atomic_write,
    check_files,
    describe_os_error,
    sha256_file,
    staged,
    together,
    write_json,
    write_jsonl,
)


def test_together_lands_every_file_at_the_end(tmp_path):
    out, manifest = tmp_path / "out.jsonl", tmp_path / "out.jsonl.manifest.json"
    with together():
        write_jsonl(out, [{"id": 1}])
        assert not out.exists()  # waits in its temporary file
        write_json(manifest, {"sha256": sha256_file(staged(out))})
    assert json.loads(manifest.read_text())["sha256"] == sha256_file(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.jsonl.manifest.json"]


def test_together_lands_nothing_when_a_later_file_fails(tmp_path):
    (tmp_path / "out.jsonl").write_text("the previous run's output\n")

    def rows():
        yield {"id": 1}
        raise InputError("in.jsonl", "bad record", line=2)

    with pytest.raises(InputError), together():
        write_jsonl(tmp_path / "out.jsonl", [{"id": 0}])
        write_jsonl(tmp_path / "second.jsonl", rows())
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temporary file, the old output untouched
    assert (tmp_path / "out.jsonl").read_text() == "the previous run's output\n"


def test_write_errors_name_the_output_in_plain_words(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(OutputError, match=r"folder: is a folder, not a file$"):
        write_json(tmp_path / "folder", {})
    with pytest.raises(OutputError, match=r"file/out.json: .*file is a file, not a folder$"):
        write_json(tmp_path / "file" / "out.json", {})
    assert describe_os_error(OSError(errno.EROFS, "Read-only file system")) == "read-only file system"
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert describe_os_error(OSError(errno.EBUSY, "Device or resource busy")) == "Device or resource busy"


def test_a_full_disk_while_writing_removes_the_temporary_file(tmp_path, monkeypatch):
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: Full(real(*a, **k)))
    with pytest.raises(OutputError) as info:
        with atomic_write(tmp_path / "out.txt") as f:
            f.write("x")
    assert str(info.value) == f"{tmp_path / 'out.txt'}: no space left on device"
    assert list(tmp_path.iterdir()) == []


def test_check_files(tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text("a\tO\n")
    (tmp_path / "link.tsv").symlink_to(src)
    os.link(src, tmp_path / "hard.tsv")
    for out in ("in.tsv", "link.tsv", "hard.tsv", "./in.tsv"):
        with pytest.raises(InputError, match="is an input of this command"):
            check_files(Files(reads=[src], writes=[tmp_path / out]))
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_files(Files(reads=[], folders=[src]))
    with pytest.raises(InputError, match="in.tsv is a file, not a folder"):
        check_files(Files(reads=[], writes=[src / "out.json"]))
    check_files(Files(reads=[src, None], writes=[tmp_path / "out.jsonl", None], folders=[tmp_path / "new"]))


@dataclass
class Toy:
    ratio: float = field(default=0.5, metadata={"help": "A share."})
    steps: int = field(default=1, metadata={"help": "Steps."})
    names: list[str] = field(default_factory=list, metadata={"help": "Names."})
    mode: str = field(default="a", metadata={"help": "Mode."})
    output: str = field(default="", metadata={"help": "Output."})
    path: str = field(init=False, default="")  # a positional argument

    def files(self) -> Files:
        return Files(reads=[self.path], writes=[self.output])


def _parse(argv: list[str]):
    return parse_config(Toy, argv, prog="toy", positional={"path": {"help": "Input."}})


def test_an_output_inside_a_sealed_folder_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    os.symlink(model, tmp_path / "link")
    for out in (model / "merged", tmp_path / "link" / "merged", model / "a" / "b"):
        with pytest.raises(InputError, match=f"^{out}: is inside {model}, an input of this command"):
            check_files(Files(folders=[out], sealed=[model]))
    with pytest.raises(InputError, match="is an input of this command"):
        check_files(Files(folders=[model], sealed=[model]))
    check_files(Files(folders=[tmp_path / "model-merged"], writes=[tmp_path / "x.json"], sealed=[model, None]))


def test_atomic_folder_lands_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not out.exists() and tmp.parent == tmp_path and tmp.name.startswith(".export.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"] and (out / "a.txt").read_text() == "a"

    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "failed") as tmp:
        (tmp / "a.txt").write_text("a")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]

    with pytest.raises(OutputError, match=f"^{out}: "), atomic_folder(out) as tmp:  # a folder with files in it
        (tmp / "b.txt").write_text("b")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]

    # what a killed run left (its process is gone) is removed by the next write of the same folder
    stale = tmp_path / ".new.999999999-abc.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    (tmp_path / "new").mkdir()  # an empty folder is replaced
    with atomic_folder(tmp_path / "new") as tmp:
        (tmp / "c.txt").write_text("c")
    assert not stale.exists() and (tmp_path / "new" / "c.txt").is_file()


@pytest.mark.parametrize(("text", "message"), [
    ("ratio: 0.2\nratoi: 0.3\n", ":2: unknown key 'ratoi': no option of toy takes it; did you mean 'ratio'?"),
    ("steps: [1\n", ":1: not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("- steps\n", ": must be a YAML mapping of option: value, not a list"),
    ("steps: 1.5\n", ":1: steps: expected int, got 1.5"),
    ("names: {a: 1}\n", ":1: names: expected a list, got {'a': 1}"),
    ("", ": file is empty"),
])
def test_config_file_mistakes_are_one_line_naming_file_and_key(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(InputError) as info:
        _parse(["in.tsv", "--config", str(config)])
    assert str(info.value) == f"{config}{message}"


def test_config_file_values_and_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("ratio: 1\nsteps: 3\nnames: [a, 2]\nmode: 7\npath: from_yaml.tsv\n")
    cfg, extra = _parse(["--config", str(config), "--steps", "4"])
    assert (cfg.ratio, cfg.steps, cfg.names, cfg.mode, cfg.path, extra) == (1.0, 4, ["a", "2"], "7", "from_yaml.tsv",
                                                                           {})
    with pytest.raises(InputError, match="^--config: needs a YAML file$"):
        _parse(["in.tsv", "--config"])
    with pytest.raises(InputError, match="missing.yaml: no such file$"):
        _parse(["in.tsv", "--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(InputError, match=f"^{tmp_path}: is a folder, not a file$"):
        _parse(["in.tsv", "--config", str(tmp_path)])


def test_options_and_overwrites_are_refused_before_the_command_runs(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("a\tO\n")
    ran = []

    def main(argv):
        cfg, _ = _parse(argv)
        ran.append(cfg)
        return 0

    for argv, line in [
        ([str(src), "--steps", "x"], "error: --steps: invalid int value: 'x'"),
        ([str(src), "--stpes", "1"], "error: --stpes: no such option (see --help)"),
        ([str(src), "--output", str(src)], f"error: {src}: is an input of this command; write the output elsewhere"),
        ([], "error: path: is required"),
    ]:
        assert run(main, argv) == 2
        assert capsys.readouterr().err == line + "\n"
    assert ran == []


def test_run_turns_os_errors_and_ctrl_c_into_one_line(capsys):
    def raises(err):
        def main(argv):
            raise err
        return main

    assert run(raises(PermissionError(errno.EACCES, "Permission denied", "/x/out.json"))) == 2
    assert capsys.readouterr().err == "error: /x/out.json: permission denied\n"
    assert run(raises(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err.startswith("error: interrupted (SIGINT)")
    assert run(raises(InputError("a.tsv", "two\nlines"))) == 2
    assert capsys.readouterr().err == "error: a.tsv: two lines\n"


def test_parse_leaves_paths_alone(tmp_path):
    cfg, _ = _parse([str(tmp_path / "in.tsv"), "--output", str(tmp_path / "o.json")])
    assert Path(cfg.path) == tmp_path / "in.tsv" and cfg.files().writes == [str(tmp_path / "o.json")]
