"""Rules as data: the initial rule set from the contract, compilation, and the one write path for
editing a rule (with its revision history).

The initial rules come from the survey contract and the real extract's profile: what the extract
shows as normal (the household-id pattern, sentinels, rare large values) is a warning, never an
error; what cannot be true (a household of zero, a code that does not exist, a sum that does not
add up) is an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.db.models import Count, Max

from rtv import contract

# Uganda's bounding box (degrees), with a little slack for GPS error at the border.
UGANDA_BOX = {"lat_min": -1.55, "lat_max": 4.30, "lon_min": 29.50, "lon_max": 35.10}
ROBUST_Z_FIELDS = ("household_size", "agriculture_land", "time_to_opd", "time_to_water")
NEAR_DUPLICATE_IGNORE = ("household_id",)
FREQUENCY_FIELDS = ("district", "hhh_sex", "work_salaried", "daily_meals", "household_fertilizer", "material_walls")


def _fmt(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def default_rules(specs: Iterable[contract.FieldSpec] = contract.ALL_FIELDS) -> list[dict[str, Any]]:
    """The initial rule set, derived from the contract."""
    out: list[dict[str, Any]] = []

    def add(kind: str, level: str, severity: str, fld: str, message: str, **params: Any) -> None:
        out.append({"code": f"{kind}.{fld}", "kind": kind, "level": level, "severity": severity, "field": fld,
                    "message": message, "params": params})

    for f in specs:
        if f.required:
            add("required", "structural", "error", f.name, f"{f.name} is required")
        if f.type in ("integer", "decimal", "code", "boolean"):
            if f.lenient:
                add("type", "structural", "warning", f.name, f"{f.name} is not a number; the value was dropped")
            elif f.type == "boolean":
                add("type", "structural", "error", f.name, f"{f.name} must be true or false")
            else:
                add("type", "structural", "error", f.name, f"{f.name} must be a number")
        if f.type == "datetime":
            add("type", "structural", "error", f.name, f"{f.name} must be a date and time with a time zone offset")
        if f.allowed and f.type in ("code", "decimal", "integer", "multiselect"):
            codes = ", ".join(_fmt(a) for a in f.allowed)
            msg = (f"{f.name} must be space-separated codes from {codes}" if f.type == "multiselect"
                   else f"{f.name} must be one of {codes}")
            add("allowed", "semantic", "error", f.name, msg, values=list(f.allowed))
        if f.allowed and f.type == "text":
            add("unknown_value", "semantic", "warning", f.name, f"{f.name} is not one of the known values",
                values=list(f.allowed))
        if f.min is not None or f.max is not None:
            lo = "-inf" if f.min is None else _fmt(f.min)
            hi = "inf" if f.max is None else _fmt(f.max)
            add("range", "semantic", "error", f.name, f"{f.name} must be between {lo} and {hi}", min=f.min, max=f.max)
        if f.pattern:
            add("pattern", "semantic", "warning", f.name, f"{f.name} does not match the expected pattern",
                regex=f.pattern)
        if f.sentinels:
            add("sentinel", "semantic", "warning", f.name, f"{f.name} holds a 'not known' code",
                values=list(f.sentinels))
        if f.warn_max is not None:
            add("outlier", "semantic", "warning", f.name, f"{f.name} is unusually large (above {_fmt(f.warn_max)})",
                max=f.warn_max)
    for result, terms in contract.SUM_IDENTITIES:
        formula = " ".join(("+ " if sign > 0 else "- ") + t for sign, t in terms).lstrip("+ ")
        add("sum_identity", "business", "error", result, f"{result} must equal {formula}",
            terms=[[sign, t] for sign, t in terms])
    add("sum_identity", "business", "error", contract.TARGET_FIELD,
        f"{contract.TARGET_FIELD} must equal the nine income components / 365 ({' + '.join(contract.TARGET_COMPONENTS)})",
        terms=[[1 / 365, t] for t in contract.TARGET_COMPONENTS], when_missing=list(contract.TARGET_CHAIN))
    for result, annual in contract.PER_DAY_IDENTITIES:
        add("per_day_identity", "business", "error", result, f"{result} must equal {annual} / 365", annual=annual)
    for usd, ugx in contract.CURRENCY_PAIRS:
        add("currency_identity", "business", "error", usd, f"{usd} must equal {ugx} / {contract.UGX_PER_USD:.2f}",
            ugx=ugx, rate=contract.UGX_PER_USD)
    add("gps_in_uganda", "business", "warning", "gps_lat", "the GPS point is outside Uganda", **UGANDA_BOX)
    add("not_in_future", "business", "error", "collected_at", "collected_at is in the future", tolerance_minutes=10)
    for name in ROBUST_Z_FIELDS:
        add("robust_z", "statistical", "warning", name,
            f"{name} is far from its district's usual values (robust z-score above 5)",
            threshold=5.0, by="district", min_group=20)
    add("frequency_shift", "statistical", "warning", "district",
        "the batch's answer frequencies differ from history (PSI above the alert level)",
        fields=list(FREQUENCY_FIELDS), psi_alert=0.25, min_history=200, history_rows=20_000)
    add("duplicate_household", "statistical", "warning", "household_id",
        "household_id appears more than once in this file")
    add("near_duplicate", "statistical", "warning", "household_id",
        "another household in the same village has identical answers", by="village",
        ignore=list(NEAR_DUPLICATE_IGNORE))
    return out


@dataclass(frozen=True)
class CompiledRule:
    code: str
    kind: str
    level: str
    severity: str
    field: str
    message: str
    params: dict[str, Any]


@dataclass
class RuleSet:
    rules: tuple[CompiledRule, ...]
    by_field: dict[str, list[CompiledRule]] = field(default_factory=dict)
    by_kind: dict[str, list[CompiledRule]] = field(default_factory=dict)
    # What the validator derives from the rules once per rule set (levels, per-field plans).
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for r in self.rules:
            self.by_field.setdefault(r.field, []).append(r)
            self.by_kind.setdefault(r.kind, []).append(r)

    def get(self, fld: str, kind: str) -> CompiledRule | None:
        return next((r for r in self.by_field.get(fld, ()) if r.kind == kind), None)

    def levels(self) -> dict[str, str]:
        """kind.field -> level, for scoring findings (computed once; do not modify)."""
        levels = self.memo.get("levels")
        if levels is None:
            levels = self.memo["levels"] = {f"{r.kind}.{r.field}": r.level for r in self.rules}
        return levels


def compile_rules(rows: Iterable[Any]) -> RuleSet:
    return RuleSet(tuple(CompiledRule(code=r.code if hasattr(r, "code") else r["code"],
                                      kind=_get(r, "kind"), level=_get(r, "level"), severity=_get(r, "severity"),
                                      field=_get(r, "field"), message=_get(r, "message"), params=_get(r, "params") or {})
                         for r in rows if _get(r, "active", True)))


def _get(r: Any, name: str, default: Any = None) -> Any:
    return r.get(name, default) if isinstance(r, dict) else getattr(r, name, default)


def contract_rules() -> RuleSet:
    """The default rules without the database (tools and tests that run outside Django)."""
    return compile_rules(default_rules())


_CACHE: dict[str, tuple[float, tuple[int, Any], RuleSet]] = {}
RULE_CACHE_SECONDS = 5.0


def active_rules() -> RuleSet:
    """The active rules, compiled once per change (checked at most every few seconds)."""
    from .models import Rule

    key = connection.alias + str(connection.settings_dict["NAME"])
    now = time.monotonic()
    hit = _CACHE.get(key)
    if hit and now - hit[0] < RULE_CACHE_SECONDS:
        return hit[2]
    stamp = Rule.objects.aggregate(n=Count("id"), m=Max("updated_at"))
    marker = (stamp["n"], stamp["m"])
    if hit and hit[1] == marker:
        _CACHE[key] = (now, marker, hit[2])
        return hit[2]
    ruleset = compile_rules(Rule.objects.filter(active=True))
    _CACHE[key] = (now, marker, ruleset)
    return ruleset


def forget_rules() -> None:
    _CACHE.clear()


def rules_load_defaults(rule_model: Any = None, revision_model: Any = None) -> int:
    """Create the default rules that do not exist yet (idempotent; the data migration calls it)."""
    if rule_model is None:
        from .models import Rule as rule_model
        from .models import RuleRevision as revision_model
    existing = set(rule_model.objects.values_list("code", flat=True))
    new = [rule_model(**r) for r in default_rules() if r["code"] not in existing]
    rule_model.objects.bulk_create(new)
    created = rule_model.objects.filter(code__in=[r.code for r in new])
    revision_model.objects.bulk_create([revision_model(rule=r, version=1, snapshot=snapshot(r), note="initial rule set")
                                        for r in created])
    return len(new)


def snapshot(rule: Any) -> dict[str, Any]:
    return {k: getattr(rule, k) for k in ("code", "kind", "level", "field", "severity", "params", "message", "active")}


# Rules that guard what storage itself requires: every record has a household id, a district and a
# village, and a household of at least one person (database constraints).  A "warning" means "kept
# and flagged", and such a row cannot be kept, so these stay active errors whatever an editor asks.
STORAGE_GUARDS = {"required.household_id", "required.district", "required.village", "range.household_size"}
INT32_MAX = 2**31 - 1

# Each kind's parameters and their types ("?": may be left out; every other one is required).  The
# trial run below cannot reach every code path (statistical rules need enough rows per district, the
# frequency shift needs history, GPS and time rules need those columns), so the types are checked here.
PARAMS: dict[str, dict[str, str]] = {
    "range": {"min": "number?", "max": "number?"},
    "outlier": {"max": "number"},
    "allowed": {"values": "values"},
    "unknown_value": {"values": "values"},
    "pattern": {"regex": "text"},
    "gps_in_uganda": {"lat_min": "number", "lat_max": "number", "lon_min": "number", "lon_max": "number"},
    "not_in_future": {"tolerance_minutes": "number?"},
    "robust_z": {"by": "field?", "min_group": "count?", "threshold": "number?"},
    "frequency_shift": {"fields": "fields?", "psi_alert": "number?", "min_history": "count?", "history_rows": "count?"},
    "near_duplicate": {"by": "field?", "ignore": "fields?"},
    "per_day_identity": {"annual": "field"},
    "currency_identity": {"ugx": "field", "rate": "number"},
    "sum_identity": {"terms": "terms", "when_missing": "fields?"},
    "sentinel": {"values": "values"},
    "required": {}, "type": {}, "duplicate_household": {},
}


class RuleProblem(ValueError):
    """Why a rule cannot be saved, and which of its attributes is at fault."""

    def __init__(self, message: str, attribute: str = "params") -> None:
        super().__init__(message)
        self.attribute = attribute


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _type_problem(kind: str, value: Any) -> str | None:
    """What is wrong with ``value`` as a parameter of type ``kind``, or None."""
    fields = contract.FIELDS_BY_NAME
    if kind == "number" and not _is_number(value):
        return "a number"
    if kind == "count" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return "a whole number of at least 1"
    if kind == "text" and not isinstance(value, str):
        return "text"
    if kind == "field" and not (isinstance(value, str) and value in fields):
        return "the name of a survey field"
    if kind == "fields" and not (isinstance(value, list) and all(isinstance(v, str) and v in fields for v in value)):
        return "a list of survey field names"
    if kind == "values" and not (isinstance(value, list) and value
                                 and all(isinstance(v, str) or _is_number(v) for v in value)):
        return "a non-empty list of codes (numbers or text)"
    if kind == "terms" and not (isinstance(value, list) and value and all(
            isinstance(t, list) and len(t) == 2 and _is_number(t[0]) and isinstance(t[1], str) and t[1] in fields
            for t in value)):
        return "a non-empty list of [coefficient, survey field name] pairs"
    return None


def params_check(rule: Any) -> None:
    """Raise ``RuleProblem`` when the parameters are not what the rule's kind reads."""
    if not isinstance(rule.params, dict):
        raise RuleProblem("params must be a JSON object")
    schema = PARAMS.get(rule.kind)
    if schema is None:
        return
    unknown = sorted(set(rule.params) - set(schema))
    if unknown:
        raise RuleProblem(f"a {rule.kind} rule has no parameter {', '.join(unknown)} "
                          f"(it reads {', '.join(sorted(schema)) or 'none'})")
    for name, kind in schema.items():
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if name not in rule.params or rule.params[name] is None:
            if optional:
                continue
            raise RuleProblem(f"a {rule.kind} rule needs the parameter {name}")
        wrong = _type_problem(kind, rule.params[name])
        if wrong:
            raise RuleProblem(f"{name} must be {wrong}, not {rule.params[name]!r}")
    low, high = rule.params.get("min"), rule.params.get("max")
    if rule.kind == "range" and low is not None and high is not None and low > high:
        raise RuleProblem(f"min ({low}) is above max ({high}): every answer would break the rule")


def guard_check(rule: Any) -> None:
    """Refuse to weaken a rule that guards what every stored record must have."""
    if rule.code not in STORAGE_GUARDS:
        return
    if not rule.active:
        raise RuleProblem(f"{rule.code} guards what every stored record must have: it cannot be deactivated",
                          "active")
    if rule.severity != "error":
        raise RuleProblem(f"{rule.code} guards what every stored record must have: a row breaking it cannot be "
                          "kept, so it stays an error", "severity")
    if rule.code == "range.household_size":
        low, high = rule.params.get("min"), rule.params.get("max")
        if low is None or low < 1:
            raise RuleProblem("range.household_size: min must be at least 1 (a household has someone in it)")
        if high is None or high > INT32_MAX:
            raise RuleProblem(f"range.household_size: max must be set, and at most {INT32_MAX}")


def rule_check(rule: Any) -> None:
    """Raise ``RuleProblem`` (a ``ValueError``) saying why when ``rule``, as it would be saved, cannot run.

    Its parameters are read by the validator (every door's), the statistical reference and the
    expectation-suite export; a typo there (a regex that does not compile, a missing ``values``, a
    number written as text) would fail each submission and each upload chunk after the save.  So the
    parameters' types are checked, rules guarding storage cannot be weakened, and the active rule set
    with this rule in it is tried on a few generated rows, and exported, before anything is written."""
    params_check(rule)
    guard_check(rule)
    if not rule.active:
        return
    from ingestion.synthetic.generator import generate
    from rtv.selectors import current_schema

    from .engine import validate_frame
    from .export import expectation_suite
    from .models import Rule
    from .reference import stored_reference

    trial = compile_rules([*Rule.objects.filter(active=True).exclude(pk=rule.pk), rule])
    data, _ = generate(12, seed=0, bad_rate=0.3)
    raw = {c: ["" if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else str(v) for v in data[c]]
           for c in data.columns}
    fields = [f for f in current_schema().fields if f.name in raw]
    try:
        validate_frame(raw, fields, rules=trial, reference=stored_reference(trial))
        expectation_suite(trial)
    except Exception as exc:  # whatever the parameters break is the answer
        raise RuleProblem(f"the {rule.kind} rule cannot run with these params ({type(exc).__name__}: {exc})") from exc


def rule_update(*, rule: Any, user: AbstractBaseUser | AnonymousUser | None, note: str = "", **changes: Any) -> Any:
    """The one write path for changing a rule: new version, revision row, audit event."""
    from rtv.services import audit_record

    from .models import Rule, RuleRevision

    allowed = {"severity", "params", "message", "active", "level"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"rules cannot change {', '.join(sorted(unknown))}")
    with transaction.atomic():
        locked = Rule.objects.select_for_update().get(pk=rule.pk)
        before = snapshot(locked)
        for k, v in changes.items():
            setattr(locked, k, v)
        locked.full_clean()
        locked.version += 1
        locked.save()
        RuleRevision.objects.create(rule=locked, version=locked.version, snapshot=snapshot(locked),
                                    changed_by=user if user is not None and user.is_authenticated else None, note=note)
        diff = {k: [before[k], v] for k, v in snapshot(locked).items() if before[k] != v}
        audit_record(actor=user, action="rule.changed", obj=locked, changes=diff)
    forget_rules()
    return locked
