"""How number text is typed: a string is a number when it fully matches the grammar (``_NUMBER``, its
digits ASCII ones) and its value is finite; anything else is NaN.  Large columns take the cheapest of
three ways to that answer (one digit per row read from the bytes, Arrow casting the whole column, or
the byte scan that sets aside strings the grammar cannot match), and number columns may be parsed
on a pool of threads; each gives the same values, bit for bit, as the grammar and the frozen engine.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from quality import engine
from quality.rules import compile_rules

from . import frozen_engine
from .test_small_inputs import assert_same

GRAMMAR = re.compile(engine._NUMBER, re.ASCII)
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

AWKWARD = [
    "", "0", "-0", "+0", "00012", "1", "+1", "-1", "1.", ".5", "+.5", "-.5e-1", "1.5e-3", "1E5", "1e+5", "1e-400",
    "1e400", "-1e400", "9" * 400, "0." + "0" * 400 + "1", "1.7976931348623157e308", "2.2250738585072014e-308",
    "123456789012345678901234567890", "0.1", "0.30000000000000004", "1.2.3", "1e", "e5", "1e+", ".", "+", "-",
    ".e1", "++1", "5-", "1-1", "1e1.5", "nan", "NaN", "NAN", "-nan", "+nan", "nan(0x1)", "nan()", "nan(abc)",
    "inf", "-inf", "+inf", "Inf", "INF", "infinity", "Infinity", "-infinity", "+INFINITY", "infinit", "in", "na",
    "0x10", "0X1p3", "1_000", "1,5", "1,000.5", " 1", "1 ", "1 2", "\t1", "1\n", "٣", "١٢", "１", "1٣", "²",
    "1d5", "1f", "0b1", "ten", "1O", "3x", "??", "abc", "€1", "1€", "½", "-٣.5", "\x00", "1\x00",
]


def grammar_value(s: str) -> float:
    """What the grammar makes of ``s``: its float when it matches and is finite, else NaN."""
    if GRAMMAR.fullmatch(s) is None:
        return math.nan
    v = float(s)
    return v if math.isfinite(v) else math.nan


def fuzz(count: int = 20_000, seed: int = 0) -> list[str]:
    """The awkward strings, then random ones over the grammar's characters, letters, separators,
    white space and other scripts' digits."""
    rnd = random.Random(seed)
    alphabet = list("0123456789.eE+-" * 3) + list("naifnityNAIFxX(),_ \t٣１d")
    return AWKWARD + ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 14))) for _ in range(count)]


def column(strings: list[str]) -> pa.Array:
    return pa.array(strings, type=pa.large_string())


def assert_bits(got: np.ndarray, want: np.ndarray) -> None:
    """The same float64 values, NaN in the same rows, -0.0 kept apart from 0.0."""
    assert got.dtype == np.float64 and got.shape == want.shape
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.int64), want[~nan].view(np.int64))


def arrow_value(s: str) -> float | None:
    """Arrow's float64 of one string, None when Arrow refuses it."""
    try:
        v = pc.cast(column([s]), pa.float64())[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return float(v)


def test_arrow_accepts_the_grammar_and_beyond_it_only_nan_or_infinity() -> None:
    """Why casting a whole column needs no check of its characters: every string the grammar matches,
    Arrow parses to the same float (infinity where too large); every other string it accepts
    ('nan', 'NaN(1)', '-Infinity', ...) it parses to NaN or an infinity, which typing turns into NaN.
    Checked on every string of up to four characters over an alphabet of the grammar's characters,
    the letters of those spellings, separators and other digits, and on the fuzz set."""
    short = ["".join(t) for k in range(5) for t in itertools.product("01.eE+-naifty( ٣", repeat=k)]
    beyond = 0
    for s in [*short, *fuzz(5_000, seed=1)]:
        v = arrow_value(s)
        if GRAMMAR.fullmatch(s) is not None:
            assert v is not None and np.float64(v).view(np.int64) == np.float64(float(s)).view(np.int64), s
        elif v is not None:
            assert math.isnan(v) or math.isinf(v), s
            beyond += 1
    assert beyond  # the spellings of NaN and infinity are there


@pytest.mark.parametrize("blank_every", [0, 7])
def test_numbers_of_a_column_are_the_grammars(blank_every: int) -> None:
    strings = fuzz()
    if blank_every:
        strings = ["" if i % blank_every == 0 else s for i, s in enumerate(strings)]
    want = np.array([grammar_value(s) for s in strings])
    for text in (column(strings), column(["x", *strings]).slice(1)):  # an array at an offset too
        assert_bits(engine._numbers(text), want)
        assert_bits(frozen_engine._numbers(text), want)
    # Small inputs (a device's submission) decide exactly as large ones: ASCII digits only ('٣' is not
    # 3), and a number too large for a float ('1e400') is not data.
    stripped = [s for s in strings if s == s.strip()]
    assert_bits(engine._numbers(np.array(stripped, dtype=object)), np.array([grammar_value(s) for s in stripped]))


def test_fast_path_and_fallback_agree() -> None:
    """The strings Arrow accepts one by one, as one column: the cast (no scan) takes it and gives what
    the byte scan gives, value for value.  The whole fuzz set: the cast refuses it, the scan decides."""
    strings = fuzz()
    accepted = [s for s in strings if s and arrow_value(s) is not None]
    assert any(GRAMMAR.fullmatch(s) is None for s in accepted)
    for chosen in (accepted, ["", *accepted[:300], "", ""]):
        text = column(chosen)
        empty = engine._blank(text)
        cast = engine._cast_numbers(text, empty)
        assert cast is not None and cast.flags.writeable
        scanned = engine._scanned_numbers(text, empty)
        cast[np.isinf(cast)] = np.nan  # as _numbers does after either
        scanned[np.isinf(scanned)] = np.nan
        assert_bits(cast, scanned)
        assert_bits(cast, np.array([grammar_value(s) for s in chosen]))
    text = column(strings)
    assert engine._cast_numbers(text, engine._blank(text)) is None


def test_refused_string_in_a_later_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """A column cast chunk by chunk: a refused string in any chunk sends it to the scan."""
    monkeypatch.setattr(engine, "_CAST_CHUNK", 7)
    good = ["1.5", "", "-2", "nan", "3e2"] * 5
    for at in (0, 6, 7, 24):
        strings = [*good[:at], "1,5", *good[at:]]
        text = column(strings)
        assert engine._cast_numbers(text, engine._blank(text)) is None
        assert_bits(engine._numbers(text), np.array([grammar_value(s) for s in strings]))
    text = column(good)
    assert engine._cast_numbers(text, engine._blank(text)) is not None
    assert_bits(engine._numbers(text), np.array([grammar_value(s) for s in good]))


@pytest.mark.parametrize("strings", [
    list("0123456789") * 3, ["", "7", "", "0", "9", ""], ["", ""], [],
])
def test_single_digits_from_the_bytes(strings: list[str]) -> None:
    text = column(strings)
    values = engine._single_digits(text, engine._blank(text))
    assert values is not None and values.flags.writeable
    want = np.array([grammar_value(s) for s in strings])
    assert_bits(values, want)
    assert_bits(engine._numbers(text), want)
    assert_bits(engine._numbers(column(["5", *strings]).slice(1)), want)


@pytest.mark.parametrize("strings", [["1", "12"], ["1", "x"], ["1", "٣"], ["1", "-"], ["", "10"], ["1", " "]])
def test_single_digits_only_when_every_row_is_one(strings: list[str]) -> None:
    text = column(strings)
    assert engine._single_digits(text, engine._blank(text)) is None
    assert_bits(engine._numbers(text), np.array([grammar_value(s) for s in strings]))


# --- number columns parsed on the pool ------------------------------------------------------------

@dataclass
class Field:
    name: str
    type: str
    required: bool = False


def _rule(kind: str, name: str, level: str = "semantic", **params: Any) -> dict[str, Any]:
    return {"code": f"{kind}.{name}", "kind": kind, "level": level, "severity": "error", "field": name,
            "message": f"{kind} {name}", "params": params}


FIELDS = [Field("amount", "decimal"), Field("place", "text"), Field("count", "integer"), Field("flag", "code"),
          Field("size", "integer"), Field("when", "datetime"), Field("note", "decimal"), Field("typed", "decimal")]
RULES = compile_rules([
    _rule("required", "amount", level="structural"), _rule("type", "amount", level="structural"),
    _rule("range", "amount", min=0, max=1e6), _rule("outlier", "amount", max=1e5),
    _rule("required", "place", level="structural"), _rule("unknown_value", "place", values=["Kanungu"]),
    _rule("type", "count", level="structural"), _rule("sentinel", "count", values=[99]),
    _rule("type", "flag", level="structural"), _rule("allowed", "flag", values=[0, 1]),
    _rule("type", "size", level="structural"), _rule("range", "size", min=1, max=30),
    _rule("type", "note", level="structural"), _rule("range", "typed", min=0, max=10),
])


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)

    def pick(choices: list[str], p_odd: float = 0.0, odd: tuple[str, ...] = ()) -> list[str]:
        out = rng.choice(np.array(choices, dtype=object), n)
        if odd:
            bad = rng.random(n) < p_odd
            out[bad] = rng.choice(np.array(odd, dtype=object), int(bad.sum()))
        return out.tolist()

    amounts = [f"{v:.2f}" for v in rng.uniform(-10, 2e5, 50)]
    return pd.DataFrame({
        "amount": pick(amounts, 0.01, ("", " 12.5 ", "1e400", "nan", "-0")),  # accepted by Arrow: the cast
        "place": pick(["Kanungu", "Mitooma", ""]),
        "count": pick(["0", "3", "12", "99"], 0.01, ("1O", "ten", "", "2.5")),  # refused: the scan
        "flag": pick(["0", "1"], 0.01, ("", "2")),  # one digit a row: the bytes
        "size": pick([str(v) for v in range(1, 40)]),
        "when": pick(["2024-01-01T10:00:00Z", ""]),
        "note": pick([""], 0.001, ("٣", "1,5", "4")),
        "typed": rng.uniform(-1, 12, n),  # already a number: no parsing
    })


@pytest.mark.parametrize("n", [3000, 20_000])
def test_threaded_typing_equals_sequential(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Number columns parsed on the pool give what parsing them one after another gives (and what the
    frozen engine gives): the same typed values, findings in the same order and scores."""
    raw = _frame(n, seed=n)
    threads: list[str] = []
    parsed = engine._parsed_numbers

    def spy(column: Any) -> Any:
        threads.append(threading.current_thread().name)
        return parsed(column)

    monkeypatch.setattr(engine, "_parsed_numbers", spy)
    monkeypatch.setattr(engine, "_PARALLEL_MIN_ROWS", 1_000)
    threaded = engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
    assert len(threads) == 5 and all(t.startswith("quality-numbers") for t in threads)
    monkeypatch.setattr(engine, "_PARALLEL_MIN_ROWS", 10**9)
    sequential = engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
    assert len(threads) == 5
    assert_same(threaded, sequential)
    assert_same(threaded, frozen_engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW))  # type: ignore[arg-type]
    assert len(threaded.issues) and set(threaded.issues["field"]) >= {"amount", "count", "flag", "size", "note"}


def test_small_inputs_stay_on_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_pool() -> Any:
        raise AssertionError("a small input used the pool")

    monkeypatch.setattr(engine, "_pool", no_pool)
    for n in (1, 300, 3000):
        raw = _frame(n, seed=3)
        assert_same(engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW),  # type: ignore[arg-type]
                    frozen_engine.validate_frame(raw.copy(), FIELDS, rules=RULES, now=NOW))  # type: ignore[arg-type]


def test_a_failing_check_cancels_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that raises leaves no parsing queued behind it; the error reaches the caller.  Parsing
    all but the first number column is held up, so that some are still queued when 'place' (the
    second field) fails."""
    monkeypatch.setattr(engine, "_PARALLEL_MIN_ROWS", 1_000)
    futures: list[Any] = []
    ahead, parsed, release = engine._parse_ahead, engine._parsed_numbers, threading.Event()

    def keep(*args: Any) -> Any:
        jobs = ahead(*args)
        futures.extend(jobs.values())
        return jobs

    def held(column: Any) -> Any:
        if column.name != "amount":
            release.wait(timeout=30)
        return parsed(column)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("broken check")

    monkeypatch.setattr(engine, "_parse_ahead", keep)
    monkeypatch.setattr(engine, "_parsed_numbers", held)
    monkeypatch.setattr(engine, "_text_rules", broken)
    try:
        with pytest.raises(RuntimeError, match="broken check"):
            engine.validate_frame(_frame(3000, seed=4), FIELDS, rules=RULES, now=NOW)  # type: ignore[arg-type]
        workers = engine._pool()._max_workers
        assert len(futures) == 5 and sum(job.cancelled() for job in futures) >= max(0, 4 - workers)
    finally:
        release.set()
    for job in futures:
        assert job.cancelled() or job.exception(timeout=30) is None
