"""The active rule set as a Great Expectations-style expectation suite (JSON)."""

from __future__ import annotations

from typing import Any

from rtv import contract

from .rules import CompiledRule, RuleSet

# The contract's types as Great Expectations' type names.
_TYPE_LIST = {"integer": ["int"], "decimal": ["float", "int"], "code": ["float", "int"], "boolean": ["int", "bool"],
              "datetime": ["datetime"], "text": ["str"], "multiselect": ["str"], "uuid": ["str"]}

_EXPECTATION = {
    "required": "expect_column_values_to_not_be_null",
    "type": "expect_column_values_to_be_in_type_list",
    "range": "expect_column_values_to_be_between",
    "allowed": "expect_column_values_to_be_in_set",
    "unknown_value": "expect_column_values_to_be_in_set",
    "pattern": "expect_column_values_to_match_regex",
    "sentinel": "expect_column_values_to_not_be_in_set",
    "outlier": "expect_column_values_to_be_between",
    "sum_identity": "expect_multicolumn_sum_to_equal",
    "per_day_identity": "expect_column_pair_values_to_be_equal",
    "currency_identity": "expect_column_pair_values_to_be_equal",
    "gps_in_uganda": "expect_column_values_to_be_between",
    "not_in_future": "expect_column_values_to_be_between",
    "robust_z": "expect_column_values_to_be_within_robust_z",
    "duplicate_household": "expect_column_values_to_be_unique",
    "near_duplicate": "expect_compound_columns_to_be_unique",
    "frequency_shift": "expect_column_distribution_psi_to_be_less_than",
}


def _kwargs(r: CompiledRule) -> dict[str, Any]:
    p = r.params
    kw: dict[str, Any] = {"column": r.field}
    if r.kind == "range":
        kw.update(min_value=p.get("min"), max_value=p.get("max"))
    elif r.kind == "outlier":
        kw.update(max_value=p.get("max"))
    elif r.kind in ("allowed", "unknown_value", "sentinel"):
        kw["value_set"] = p.get("values")
    elif r.kind == "pattern":
        kw["regex"] = p.get("regex")
    elif r.kind == "type":
        spec = contract.FIELDS_BY_NAME.get(r.field)
        kw["type_list"] = _TYPE_LIST.get(spec.type if spec is not None else "", ["float", "int"])
    elif r.kind == "sum_identity":
        kw = {"column_list": [t for _, t in p["terms"]], "signs": [s for s, _ in p["terms"]], "sum_total_column": r.field}
        if p.get("when_missing"):
            kw["row_condition"] = {"any_null": p["when_missing"]}  # checked only where the chain of totals has a gap
    elif r.kind == "per_day_identity":
        kw = {"column_A": r.field, "column_B": p["annual"], "transform_B": "divide_by_365"}
    elif r.kind == "currency_identity":
        kw = {"column_A": r.field, "column_B": p["ugx"], "transform_B": f"divide_by_{p['rate']}"}
    elif r.kind == "gps_in_uganda":
        kw = {"column": "gps_lat", "min_value": p["lat_min"], "max_value": p["lat_max"],
              "and": {"column": "gps_lon", "min_value": p["lon_min"], "max_value": p["lon_max"]}}
    elif r.kind == "not_in_future":
        kw.update(max_value="now", tolerance_minutes=p.get("tolerance_minutes"))
    elif r.kind == "robust_z":
        kw.update(threshold=p.get("threshold"), group_by=p.get("by"), min_group=p.get("min_group"))
    elif r.kind == "near_duplicate":
        kw = {"column_list": "all feature columns", "ignore": p.get("ignore"), "group_by": p.get("by")}
    elif r.kind == "frequency_shift":
        kw = {"column_list": p.get("fields"), "threshold": p.get("psi_alert"), "min_history": p.get("min_history"),
              "history_rows": p.get("history_rows")}
    return kw


def expectation_suite(rules: RuleSet, *, name: str = "rtv_ahs_survey") -> dict[str, Any]:
    return {
        "expectation_suite_name": name,
        "meta": {"generated_by": "rtv quality.export", "rules": len(rules.rules)},
        "expectations": [
            {"expectation_type": _EXPECTATION.get(r.kind, f"expect_{r.kind}"), "kwargs": _kwargs(r),
             "meta": {"rule": r.code, "level": r.level, "severity": r.severity, "message": r.message,
                      # an error rejects the row: every row must pass; a warning keeps and flags it
                      "mostly": 1.0 if r.severity == "error" else 0.0}}
            for r in rules.rules
        ],
    }
