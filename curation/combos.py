"""Neural dataset-combination search for multi-task training (Zhan & Zhang, "Towards Better Multi-task Learning: A
Framework for Optimizing Dataset Combinations in Large Language Models").

    from curation.combos import search
    result = search(evaluate, ["NCBI-disease", "BC5CDR", "BC2GM", "JNLPBA", "linnaeus"], target="NCBI-disease",
                    budget=12, history_path="runs/combos/history.jsonl")
    result.best_mix, result.best_score, result.stopped_because, result.history

``evaluate(mix)`` trains on the datasets of ``mix`` (a ``frozenset`` of names, the target always included) and
returns a score to maximise (the target's dev F1). The ``k`` datasets other than the target are the candidates; a
mix is a bit vector over them, and the ``2**k`` mixes are the rows of :func:`all_mixes`. The loop:

1. **Design.** The target-only baseline plus mixes that between them hold every candidate (:func:`initial_design`:
   ``"balanced"``, random rows in which every candidate is in about half of the mixes, or ``"single"``, the
   paper's one candidate at a time).
2. **Evaluate** each and append ``(mix, score)`` to the history.
3. **Fit** a two-layer MLP (``k`` inputs, one output; :class:`MLPEnsemble`, an ensemble of ``members`` of them on
   Bayesian-bootstrap weights when ``members > 1``) on the history, **predict** all ``2**k`` mixes, and evaluate
   the mix with the highest acquisition ``mean + beta * spread`` (the spread is the ensemble's standard deviation,
   an upper-confidence-bound exploration bonus; ``beta = 0`` is the paper's greedy choice). Refit, repeat.
4. **Stop** when the predicted best mix was already evaluated (the paper's rule; with ``patience = p`` the search
   first evaluates the best *untried* mix ``p - 1`` times in a row, and ``patience = 0`` never stops this way),
   when ``budget`` evaluations or ``hours`` of evaluation time are spent, when every mix has been evaluated, or
   after :data:`MAX_CONSECUTIVE_FAILURES` failed evaluations in a row.

An evaluation that raises or returns a non-finite score is recorded as a failure (score ``nan`` in the history,
the error text in the file), is never re-evaluated and is left out of the regressor's data; the search goes on.

**History file** (``history_path``): JSON lines, the first a header ``{"kind": "header", "format", "target",
"candidates", "settings", ...}``, then one ``{"kind": "eval", "n", "mix", "bits", "score", "error", "seconds",
"chosen_by", "predicted", "spread", "time"}`` per evaluation, appended and fsynced as soon as it is known. A search
given an existing history resumes it: its mixes are not evaluated again, and because every choice is a
deterministic function of the seed and the history so far, the resumed search makes the same choices an
uninterrupted one would. A history made for another target, candidate list or evaluator ``settings`` is refused
with an :class:`~curation.io.InputError` naming the difference; a final line cut short by a crash is dropped.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curation.io import InputError, read_jsonl

log = logging.getLogger(__name__)

FORMAT = "bioselect.combos/1"
MAX_K = 22  # 2**22 rows of 22 bits is 92 MB (plus a 4x scratch copy); beyond that enumeration is the wrong tool
MAX_CONSECUTIVE_FAILURES = 3
DESIGNS = ("balanced", "single")
STOP_REASONS = ("converged", "budget", "hours", "exhausted", "failures")

Mix = frozenset


# ---------------------------------------------------------------------------------------------------------------
# mixes as bit vectors


def all_mixes(k: int) -> np.ndarray:
    """Every subset of ``k`` candidates as a ``(2**k, k)`` uint8 matrix: row ``i`` holds the bits of ``i``, column
    ``j`` bit ``j`` (candidate ``j``), so row 0 is the empty mix and :func:`mix_index` inverts it.

    >>> all_mixes(2).tolist()
    [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    if not 0 <= k <= MAX_K:
        raise ValueError(f"k must be in [0, {MAX_K}] to enumerate 2**k mixes, not {k}")
    rows = np.arange(1 << k, dtype="<u4")  # little-endian: byte 0 holds bits 0-7
    bits = np.unpackbits(rows.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")
    return np.ascontiguousarray(bits[:, :k])


def mix_index(bits: np.ndarray) -> np.ndarray | int:
    """Row of :func:`all_mixes` holding ``bits`` (one vector, or a matrix of them row by row).

    >>> mix_index(np.array([0, 1, 1])), mix_index(all_mixes(3)).tolist()
    (6, [0, 1, 2, 3, 4, 5, 6, 7])
    """
    bits = np.asarray(bits, dtype=np.int64)
    weights = np.int64(1) << np.arange(bits.shape[-1], dtype=np.int64)
    out = bits @ weights
    return int(out) if out.ndim == 0 else out


def bits_to_mix(bits: Sequence[int] | np.ndarray, candidates: Sequence[str], target: str | None = None) -> frozenset:
    """The datasets a bit vector trains on (the target always included).

    >>> sorted(bits_to_mix([1, 0, 1], ["a", "b", "c"], target="t"))
    ['a', 'c', 't']
    """
    names = {c for c, b in zip(candidates, bits, strict=True) if b}
    return frozenset(names | ({target} if target is not None else set()))


def mix_to_bits(mix: Sequence[str] | frozenset, candidates: Sequence[str], target: str | None = None) -> np.ndarray:
    """A mix's bit vector over ``candidates``; a name that is neither a candidate nor the target is a ``ValueError``.

    >>> mix_to_bits({"t", "c"}, ["a", "b", "c"], target="t").tolist()
    [0, 0, 1]
    """
    unknown = sorted(set(mix) - set(candidates) - {target})
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(map(repr, unknown))}; candidates are "
                         f"{', '.join(candidates)}" + (f" and target {target}" if target else ""))
    return np.array([int(c in mix) for c in candidates], dtype=np.uint8)


def bit_string(bits: Sequence[int] | np.ndarray) -> str:
    """``"0101..."``, candidate 0 first (the ``bits`` field of a history row).

    >>> bit_string([1, 0, 1])
    '101'
    """
    return "".join(str(int(b)) for b in bits)


def initial_design(k: int, n: int | None = None, kind: str = "balanced", seed: int = 0,
                   baseline: bool = True) -> np.ndarray:
    """The first mixes to evaluate, as rows of bits: the empty row (target-only baseline) when ``baseline``, then
    mixes that between them hold every candidate at least once.

    ``kind="single"``: one candidate at a time (``k`` rows, the paper's). ``kind="balanced"``: ``n`` rows in all
    (default ``max(3, ceil(k / 2) + 1)``, baseline included) in which each candidate is in about half of the
    non-baseline rows, columns shuffled independently (a seeded, near-orthogonal two-level design: every main effect
    is seen on and off from the start); rows are distinct.

    >>> d = initial_design(11, seed=0)
    >>> d.shape, int(d[0].sum()), bool(d[1:].any(axis=0).all())
    ((7, 11), 0, True)
    >>> initial_design(3, kind="single").tolist()
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    """
    if kind not in DESIGNS:
        raise ValueError(f"design must be one of {', '.join(DESIGNS)}, not {kind!r}")
    rows: list[np.ndarray] = [np.zeros(k, dtype=np.uint8)] if baseline else []
    if k == 0:
        return np.array(rows, dtype=np.uint8).reshape(len(rows), 0)
    if kind == "single":
        return np.concatenate([np.array(rows, dtype=np.uint8).reshape(-1, k), np.eye(k, dtype=np.uint8)])
    n = max(3, math.ceil(k / 2) + 1) if n is None else n
    m = min(n - len(rows), (1 << k) - 1)  # non-empty rows besides the baseline
    if m < 1:
        raise ValueError(f"a design of {n} mixes has no room beside the baseline; give n >= 2")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        ones = np.zeros((m, k), dtype=np.uint8)
        for j in range(k):
            col = np.zeros(m, dtype=np.uint8)
            col[: (m + int(rng.integers(2))) // 2 if m > 1 else 1] = 1
            ones[:, j] = rng.permutation(col)
        distinct = len({bit_string(r) for r in ones}) == m and not (ones.sum(axis=1) == 0).any()
        if distinct:
            break
    else:  # tiny k: fall back to distinct random non-empty rows
        idx = rng.choice(np.arange(1, 1 << k), size=m, replace=False)
        ones = all_mixes(k)[idx]
    # every candidate in at least one row, even when m == 1 left a column empty
    for j in np.flatnonzero(ones.sum(axis=0) == 0):
        ones[int(np.argmin(ones.sum(axis=1))), j] = 1
    return np.concatenate([np.array(rows, dtype=np.uint8).reshape(-1, k), ones])


# ---------------------------------------------------------------------------------------------------------------
# the regressor


class MLPEnsemble:
    """``members`` two-layer MLPs (``k`` inputs, ``hidden`` tanh units, one output) trained together, full batch,
    with Adam on the mean squared error plus ``weight_decay`` times the squared weights. Inputs are bits mapped to
    -1/+1; targets are standardised. With ``members > 1`` each member sees the data under its own Bayesian
    bootstrap weights (exponential, normalised) as well as its own initialisation, so their spread says where the
    data leave the fit open. numpy only, deterministic for a seed.

    >>> X = all_mixes(3).astype(float); y = X @ [1.0, -1.0, 0.5]
    >>> mean, spread = MLPEnsemble(3, members=4, seed=0).fit(X, y).predict(X)
    >>> int(np.argmax(mean)), mean.shape, bool((spread >= 0).all())
    (5, (8,), True)
    """

    def __init__(self, k: int, hidden: int = 32, members: int = 1, steps: int = 400, lr: float = 0.02,
                 weight_decay: float = 1e-3, seed: int = 0):
        if k < 1 or hidden < 1 or members < 1 or steps < 1:
            raise ValueError("k, hidden, members and steps must be >= 1")
        self.k, self.hidden, self.members, self.steps = k, hidden, members, steps
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self.params: dict[str, np.ndarray] | None = None
        self.y_mean, self.y_std = 0.0, 1.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> MLPEnsemble:
        X = 2.0 * np.asarray(X, dtype=np.float64) - 1.0
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.k or len(y) != len(X) or len(y) == 0:
            raise ValueError(f"need X of shape (n, {self.k}) and y of length n >= 1")
        self.y_mean = float(y.mean())
        self.y_std = float(y.std()) or 1.0
        t = (y - self.y_mean) / self.y_std
        rng = np.random.default_rng(self.seed)
        M, k, h, n = self.members, self.k, self.hidden, len(y)
        p = {"W1": rng.normal(0, 1 / math.sqrt(k), (M, k, h)), "b1": np.zeros((M, 1, h)),
             "W2": rng.normal(0, 1 / math.sqrt(h), (M, h, 1)), "b2": np.zeros((M, 1, 1))}
        w = rng.exponential(1.0, (M, n)) if M > 1 else np.ones((M, n))
        w = (w / w.sum(axis=1, keepdims=True))[:, :, None]  # (M, n, 1)
        m = {name: np.zeros_like(v) for name, v in p.items()}
        v2 = {name: np.zeros_like(v) for name, v in p.items()}
        b1, b2, eps = 0.9, 0.999, 1e-8
        tt = t[None, :, None]
        for step in range(1, self.steps + 1):
            H = np.tanh(X @ p["W1"] + p["b1"])  # (M, n, h)
            r = H @ p["W2"] + p["b2"] - tt  # (M, n, 1)
            d = 2.0 * w * r
            dH = (d @ p["W2"].transpose(0, 2, 1)) * (1.0 - H * H)
            g = {"W2": H.transpose(0, 2, 1) @ d + 2 * self.weight_decay * p["W2"],
                 "b2": d.sum(axis=1, keepdims=True),
                 "W1": X.T[None] @ dH + 2 * self.weight_decay * p["W1"],
                 "b1": dH.sum(axis=1, keepdims=True)}
            for name in p:
                m[name] = b1 * m[name] + (1 - b1) * g[name]
                v2[name] = b2 * v2[name] + (1 - b2) * g[name] ** 2
                p[name] -= self.lr * (m[name] / (1 - b1**step)) / (np.sqrt(v2[name] / (1 - b2**step)) + eps)
        self.params = {name: v.astype(np.float32) for name, v in p.items()}
        return self

    def predict(self, X: np.ndarray, chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over the members of the predicted score of each row of bits ``X``
        (in score units), computed in chunks of rows so ``2**20`` mixes fit in memory."""
        if self.params is None:
            raise ValueError("fit the ensemble first")
        p = self.params
        mean = np.empty(len(X), dtype=np.float64)
        spread = np.empty(len(X), dtype=np.float64)
        for lo in range(0, len(X), chunk):
            x = 2.0 * np.asarray(X[lo : lo + chunk], dtype=np.float32) - 1.0
            out = (np.tanh(x @ p["W1"] + p["b1"]) @ p["W2"] + p["b2"])[:, :, 0]  # (M, c)
            mean[lo : lo + chunk] = out.mean(axis=0)
            spread[lo : lo + chunk] = out.std(axis=0)
        return self.y_mean + self.y_std * mean, self.y_std * spread


def choose_next(mean: np.ndarray, spread: np.ndarray, tried: np.ndarray, beta: float = 0.0,
                valid: np.ndarray | None = None) -> tuple[int, bool]:
    """The row to evaluate next: the argmax of ``mean + beta * spread`` over the ``valid`` rows (all when None),
    and whether that argmax was already ``tried``. When it was, the first return is the best untried row instead
    (-1 when every valid row is tried).

    >>> choose_next(np.array([1.0, 3.0, 2.0]), np.zeros(3), np.array([False, True, False]))
    (2, True)
    >>> choose_next(np.array([1.0, 2.0, 2.5]), np.array([0, 1.0, 0]), np.zeros(3, bool), beta=1.0)
    (1, False)
    """
    acq = mean + beta * spread if beta else mean.copy()
    if valid is not None:
        acq = np.where(valid, acq, -np.inf)
    best = int(np.argmax(acq))
    if not tried[best]:
        return best, False
    acq[tried] = -np.inf
    untried = int(np.argmax(acq))
    return (untried if np.isfinite(acq[untried]) else -1), True


# ---------------------------------------------------------------------------------------------------------------
# history


@dataclass
class Row:
    """One evaluation of the history (a line of the history file)."""

    n: int
    mix: frozenset
    bits: str
    score: float  # nan when the evaluation failed
    error: str | None = None
    seconds: float = 0.0
    chosen_by: str = "design"  # design | model | untried (predicted best already tried) | random
    predicted: float | None = None
    spread: float | None = None
    time: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "eval", "n": self.n, "mix": sorted(self.mix), "bits": self.bits,
                "score": self.score if self.ok else None, "error": self.error, "seconds": round(self.seconds, 3),
                "chosen_by": self.chosen_by, "predicted": self.predicted, "spread": self.spread, "time": self.time}


@dataclass
class SearchResult:
    """What a search found: ``history`` is ``[(mix, score), ...]`` in evaluation order (``nan`` for a failure)."""

    best_mix: frozenset | None
    best_score: float
    history: list[tuple[frozenset, float]]
    stopped_because: str
    target: str | None
    candidates: list[str]
    rows: list[Row] = field(default_factory=list)
    predicted_top: list[tuple[frozenset, float, float]] = field(default_factory=list)

    @property
    def failures(self) -> dict[frozenset, str]:
        return {r.mix: r.error for r in self.rows if not r.ok}

    def best_so_far(self) -> list[float]:
        """The best score after each evaluation (``nan`` until the first success).

        >>> SearchResult(None, 0.0, [(frozenset(), 0.2), (frozenset(), float("nan")), (frozenset(), 0.1)],
        ...              "budget", None, []).best_so_far()
        [0.2, 0.2, 0.2]
        """
        out, best = [], -math.inf
        for _, s in self.history:
            if not math.isnan(s):
                best = max(best, s)
            out.append(best if best > -math.inf else math.nan)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "candidates": self.candidates,
            "best_mix": sorted(self.best_mix) if self.best_mix is not None else None,
            "best_score": self.best_score if not math.isnan(self.best_score) else None,
            "stopped_because": self.stopped_because, "evaluations": len(self.rows),
            "failures": len(self.failures),
            "history": [r.to_dict() for r in self.rows],
            "predicted_top": [{"mix": sorted(m), "predicted": round(mu, 6), "spread": round(sd, 6)}
                              for m, mu, sd in self.predicted_top],
        }


def _header(target: str | None, candidates: Sequence[str], settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"kind": "header", "format": FORMAT, "target": target, "candidates": list(candidates),
            "settings": dict(settings), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def _describe(target: str | None, candidates: Sequence[str]) -> str:
    return f"target {target!r} and candidates [{', '.join(sorted(candidates))}]"


def read_history(path: str | os.PathLike, target: str | None, candidates: Sequence[str],
                 settings: Mapping[str, Any] | None = None, added: Mapping[str, Any] | None = None) -> list[Row]:
    """The rows of an existing history file made for the same target, candidates and ``settings`` (compared key by
    key; ``None`` skips the check). ``added`` maps settings that evaluators gained after histories were written to
    the value those histories used: a header without such a key reads as holding that value. A final line cut short
    (no newline, not JSON: a crash while writing) is dropped from the file; anything else malformed, or a history
    made for another search, is an :class:`InputError`."""
    path = Path(path)
    raw = path.read_bytes()
    lines = raw.decode("utf-8").split("\n")
    if lines and lines[-1].strip():
        try:
            json.loads(lines[-1])
        except json.JSONDecodeError:
            keep = raw[: raw.rfind(b"\n") + 1]
            log.warning("%s: dropping a final line cut short (%d bytes) left by an interrupted write", path,
                        len(raw) - len(keep))
            with open(path, "r+b") as f:
                f.truncate(len(keep))
            lines = keep.decode("utf-8").split("\n")
    objs = list(read_jsonl(path)) if any(line.strip() for line in lines) else []
    if not objs or objs[0][1].get("kind") != "header":
        raise InputError(path, "not a combination-search history: the first line must be its header; give a new "
                               "history path")
    header = objs[0][1]
    if header.get("format") != FORMAT:
        raise InputError(path, f"history format {header.get('format')!r}, expected {FORMAT!r}", line=objs[0][0])
    old_target, old = header.get("target"), header.get("candidates") or []
    if old_target != target or sorted(old) != sorted(candidates):
        raise InputError(path, f"this history was made for {_describe(old_target, old)}, but this search has "
                               f"{_describe(target, candidates)}; give another history path (or the original dataset "
                               "list) to keep that history")
    if settings is not None:
        before = {**(added or {}), **(header.get("settings") or {})}
        diff = sorted(key for key in set(before) | set(settings) if before.get(key) != settings.get(key))
        if diff:
            changes = "; ".join(f"{key}: {before.get(key)!r} -> {settings.get(key)!r}" for key in diff)
            raise InputError(path, f"this history was scored with other evaluator settings ({changes}); its scores "
                                   "would not be comparable: give another history path or the original settings")
    rows: list[Row] = []
    for n, obj in objs[1:]:
        if obj.get("kind") != "eval" or not isinstance(obj.get("mix"), list):
            raise InputError(path, "expected an evaluation row with 'mix'", line=n)
        try:
            bits = mix_to_bits(obj["mix"], candidates, target)
        except ValueError as err:
            raise InputError(path, str(err), line=n) from None
        score = obj.get("score")
        error = obj.get("error")
        if error is None and not isinstance(score, (int, float)):
            raise InputError(path, "an evaluation row needs a number 'score' or an 'error'", line=n)
        rows.append(Row(n=len(rows) + 1, mix=bits_to_mix(bits, candidates, target), bits=bit_string(bits),
                        score=float(score) if error is None else math.nan, error=error,
                        seconds=float(obj.get("seconds") or 0.0), chosen_by=obj.get("chosen_by", "design"),
                        predicted=obj.get("predicted"), spread=obj.get("spread"), time=obj.get("time", "")))
    return rows


def _append(path: Path, obj: Mapping[str, Any]) -> None:
    # one line per evaluation, on disk before the next evaluation starts: an evaluation costs minutes to hours
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------------------------
# the loop


def _run_one(evaluate: Callable[[frozenset], float], mix: frozenset) -> tuple[float, str | None, float]:
    start = time.perf_counter()
    try:
        value = evaluate(mix)
        score = float(value)
        error = None if math.isfinite(score) else f"the evaluator returned {value!r}"
    except Exception as err:  # noqa: BLE001 - any evaluator failure is recorded and the search goes on
        score, error = math.nan, f"{type(err).__name__}: {err}".strip()
    if error is not None:
        score = math.nan
    return score, error, time.perf_counter() - start


def search_steps(evaluate: Callable[[frozenset], float], datasets: Sequence[str], target: str | None = None,
                 budget: int = 50, seed: int = 0, *, hours: float | None = None,
                 history_path: str | os.PathLike | None = None, design: str = "balanced", n_init: int | None = None,
                 members: int = 5, beta: float = 3.0, hidden: int = 32, fit_steps: int = 400, patience: int = 3,
                 settings: Mapping[str, Any] | None = None, added_settings: Mapping[str, Any] | None = None,
                 state: dict[str, Any] | None = None) -> Iterator[Row]:
    """:func:`search` as a generator: yields each new :class:`Row` as soon as it is recorded (rows resumed from
    the history are not yielded) and fills ``state`` (``rows``, ``stopped_because``, ``predicted_top``,
    ``candidates``) as it goes. Stop iterating to end the search early; the history on disk stays valid."""
    state = {} if state is None else state
    names = list(datasets)
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names repeat: {names}")
    candidates = [d for d in names if d != target]
    k = len(candidates)
    if k == 0:
        raise ValueError("no candidate dataset besides the target")
    if k > MAX_K:
        raise ValueError(f"{k} candidates: enumerating 2**{k} mixes is beyond this search (at most {MAX_K})")
    if budget < 1:
        raise ValueError("budget must be >= 1")
    if patience < 0 or members < 1:
        raise ValueError("patience must be >= 0 and members >= 1")
    settings = dict(settings or {})

    X = all_mixes(k)
    valid = np.ones(len(X), dtype=bool)
    if target is None:
        valid[0] = False  # without a target the empty mix trains on nothing
    tried = np.zeros(len(X), dtype=bool)
    rows: list[Row] = []
    path = Path(history_path) if history_path is not None else None
    if path is not None and path.exists() and path.stat().st_size:
        rows = read_history(path, target, candidates, settings, added_settings)
        for r in rows:
            tried[int(r.bits[::-1], 2)] = True
        log.info("resuming %s: %d evaluations already made", path, len(rows))
    elif path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _append(path, _header(target, candidates, settings))
    state.update(rows=rows, candidates=candidates, target=target, stopped_because=None, predicted_top=[])

    def stop_reason() -> str | None:
        if len(rows) >= budget:
            return "budget"
        if hours is not None and sum(r.seconds for r in rows) >= hours * 3600:
            return "hours"
        if tried[valid].all():
            return "exhausted"
        trailing = 0
        for r in reversed(rows):
            if r.ok:
                break
            trailing += 1
        return "failures" if trailing >= MAX_CONSECUTIVE_FAILURES else None

    def record(idx: int, chosen_by: str, predicted: float | None = None, spread: float | None = None) -> Row:
        mix = bits_to_mix(X[idx], candidates, target)
        log.info("evaluation %d (%s): %s", len(rows) + 1, chosen_by, ", ".join(sorted(mix)))
        score, error, seconds = _run_one(evaluate, mix)
        row = Row(n=len(rows) + 1, mix=mix, bits=bit_string(X[idx]), score=score, error=error, seconds=seconds,
                  chosen_by=chosen_by, predicted=predicted, spread=spread,
                  time=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if path is not None:
            _append(path, row.to_dict())
        rows.append(row)
        tried[idx] = True
        if error is None:
            log.info("evaluation %d: score %.4f (%.0f s)", row.n, score, seconds)
        else:
            log.warning("evaluation %d failed, recorded, going on: %s", row.n, error)
        return row

    design_rows = initial_design(k, n_init, design, seed, baseline=target is not None)
    for idx in mix_index(design_rows).tolist():
        if tried[idx]:
            continue
        reason = stop_reason()
        if reason is not None:
            state["stopped_because"] = reason
            return
        yield record(idx, "design")

    rng_random = np.random.default_rng([seed, 1])
    while True:
        reason = stop_reason()
        if reason is not None:
            state["stopped_because"] = reason
            return
        ok = [r for r in rows if r.ok]
        if len({r.bits for r in ok}) < 2:  # nothing to fit yet (the design failed): a random untried mix
            choices = np.flatnonzero(valid & ~tried)
            idx = int(choices[rng_random.integers(len(choices))])
            yield record(idx, "random")
            continue
        bits = np.array([[int(c) for c in r.bits] for r in ok], dtype=np.uint8)
        scores = np.array([r.score for r in ok])
        # seeded by the history's length, so a resumed search refits exactly as an uninterrupted one did
        model = MLPEnsemble(k, hidden=hidden, members=members, steps=fit_steps, seed=seed * 1_000_003 + len(rows))
        mean, spread = model.fit(bits, scores).predict(X)
        top = np.argsort(-np.where(valid, mean, -np.inf), kind="stable")[:10]
        state["predicted_top"] = [(bits_to_mix(X[i], candidates, target), float(mean[i]), float(spread[i]))
                                  for i in top]
        idx, already = choose_next(mean, spread, tried, beta, valid)
        if already:
            streak = 1
            for r in reversed(rows):
                if r.chosen_by != "untried":
                    break
                streak += 1
            if patience and streak >= patience:
                state["stopped_because"] = "converged"
                return
        yield record(idx, "untried" if already else "model", float(mean[idx]), float(spread[idx]))


def search(evaluate: Callable[[frozenset], float], datasets: Sequence[str], target: str | None = None,
           budget: int = 50, seed: int = 0, **options: Any) -> SearchResult:
    """Search the mixes of ``datasets`` for the one whose ``evaluate(mix)`` is highest (see the module doc).

    ``datasets`` may include ``target``; every other name is a candidate. ``options`` are those of
    :func:`search_steps`: ``hours``, ``history_path``, ``design``, ``n_init``, ``members``, ``beta``, ``hidden``,
    ``fit_steps``, ``patience``, ``settings``, ``added_settings``.

    >>> value = {"a": 0.3, "b": -0.2, "c": 0.1}
    >>> r = search(lambda mix: sum(value.get(d, 0) for d in mix), ["t", "a", "b", "c"], target="t", budget=8)
    >>> sorted(r.best_mix), round(r.best_score, 2), r.stopped_because in ("converged", "budget")
    (['a', 'c', 't'], 0.4, True)
    """
    state: dict[str, Any] = {}
    for _ in search_steps(evaluate, datasets, target, budget, seed, state=state, **options):
        pass
    return result_from(state)


def result_from(state: Mapping[str, Any]) -> SearchResult:
    """The :class:`SearchResult` of a finished (or abandoned) :func:`search_steps` run."""
    rows: list[Row] = state["rows"]
    ok = [r for r in rows if r.ok]
    best = max(ok, key=lambda r: r.score, default=None)  # first of equal scores: max keeps the earliest
    return SearchResult(best_mix=best.mix if best else None, best_score=best.score if best else math.nan,
                        history=[(r.mix, r.score) for r in rows], stopped_because=state.get("stopped_because") or
                        "interrupted", target=state["target"], candidates=list(state["candidates"]), rows=list(rows),
                        predicted_top=list(state.get("predicted_top", [])))


def plot_best_so_far(result: SearchResult, path: str | os.PathLike, title: str = "") -> None:
    """PNG of the best score so far after each evaluation, each evaluation's own score beside it (failures as
    crosses on the axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curation.io import atomic_write

    n = np.arange(1, len(result.rows) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    scores = np.array([r.score for r in result.rows])
    ax.step(n, result.best_so_far(), where="post", color="C0", label="best so far")
    for kind, marker, color, label in (("design", "s", "C2", "design"), ("model", "o", "C1", "model's pick"),
                                       ("untried", "D", "C4", "best untried (predicted best already tried)"),
                                       ("random", "^", "C5", "random")):
        sel = np.array([r.chosen_by == kind and r.ok for r in result.rows], dtype=bool)
        if sel.any():
            ax.scatter(n[sel], scores[sel], marker=marker, color=color, s=22, zorder=3, label=label)
    failed = np.array([not r.ok for r in result.rows], dtype=bool)
    if failed.any():
        low = np.nanmin(scores) if np.isfinite(scores).any() else 0.0
        ax.scatter(n[failed], np.full(failed.sum(), low), marker="x", color="red", zorder=3, label="failed")
    ax.set_xlabel("evaluation")
    ax.set_ylabel("score")
    ax.set_title(title or f"combination search, target {result.target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
