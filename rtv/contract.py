"""The survey data contract: every column of the RTV Annual Household Survey extract.

This module is the single source the schema tables are loaded from (data migration
``rtv/migrations/0002_load_contract``), and the generator, the ingestion mapper, the
validator and the feature pipeline all read the same tables (or this list, before the
database exists).  Ranges are *hard* limits: a value outside is an error.  ``warn_max``
marks values that are real but rare (a 90-acre farm): kept, flagged as a warning.

Money columns are annual USD unless ``unit`` says UGX; the real extract converts at
4463.178775105381 UGX per USD (``UGX_PER_USD``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CONTRACT_VERSION = "ahs-2024.1"
UGX_PER_USD = 4463.178775105381

FieldType = Literal["text", "integer", "decimal", "code", "multiselect", "uuid", "datetime", "boolean"]
Role = Literal["identifier", "location", "feature", "money", "derived", "label", "metadata"]
Pii = Literal["none", "pseudonymous", "quasi", "direct", "location"]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    header: str | None  # the raw header it is read from (None: not in the extract)
    position: int | None  # 0-based column position in the extract
    type: FieldType
    unit: str  # UGX, USD, USD/day, minutes, acres, count, code, text, ...
    role: Role
    description: str = ""
    required: bool = False
    allowed: tuple[float | int | str, ...] = ()
    min: float | None = None
    max: float | None = None
    warn_max: float | None = None  # above: kept, reported as a warning
    sentinels: tuple[float, ...] = ()  # codes meaning "unknown": warning, missing for features
    lenient: bool = False  # unparseable values are warnings (value dropped), not errors
    pattern: str | None = None  # regex; a mismatch is a warning
    pii: Pii = "none"
    aliases: tuple[str, ...] = field(default_factory=tuple)


def _m(name: str, header: str, pos: int, desc: str, role: Role = "money", unit: str = "USD") -> FieldSpec:
    return FieldSpec(name, header, pos, "decimal", unit, role, desc, min=0)


def _flag(name: str, header: str, pos: int, desc: str) -> FieldSpec:
    return FieldSpec(name, header, pos, "code", "code", "feature", desc, allowed=(0, 1))


HOUSEHOLD_ID_PATTERN = r"^[A-Z]{3}-[A-Z]{3}-[A-Z]{3}-[A-Z]\d+$"

SURVEY_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("district", "District", 0, "text", "text", "location", "District of the household", required=True, pii="quasi",
              allowed=("Rukungiri", "Mitooma", "Kanungu", "Rubanda")),
    FieldSpec("cluster", "Cluster", 1, "text", "text", "location", "Cluster within the district", required=True, pii="quasi"),
    FieldSpec("village", "Village", 2, "text", "text", "location", "Village of the household", required=True, pii="quasi"),
    FieldSpec("household_id", "HouseHoldID", 3, "text", "text", "identifier", "Household identifier (district-village-head-serial)",
              required=True, pattern=HOUSEHOLD_ID_PATTERN, pii="pseudonymous"),
    FieldSpec("household_size", "HouseholdSize", 4, "integer", "count", "feature", "Number of people in the household",
              required=True, min=1, max=60, warn_max=30),
    FieldSpec("time_to_opd", "TimeToOPD", 5, "decimal", "minutes", "feature", "Minutes to the nearest outpatient department",
              min=0, max=1440, warn_max=300),
    FieldSpec("time_to_water", "TimeToWater", 6, "decimal", "minutes", "feature", "Minutes to reach water",
              min=0, max=1440, warn_max=300),
    FieldSpec("agriculture_land", "AgricultureLand", 7, "decimal", "acres", "feature", "Agricultural land owned (acres)",
              min=0, max=500, warn_max=30),
    FieldSpec("season1_crops_planted", "Season1CropsPlanted", 8, "integer", "count", "feature", "Crop types planted in season 1",
              min=0, max=30),
    FieldSpec("season2_crops_planted", "Season2CropsPlanted", 9, "integer", "count", "feature", "Crop types planted in season 2",
              min=0, max=30),
    FieldSpec("perennial_crops_grown", "PerennialCropsGrown", 10, "integer", "count", "feature", "Perennial crop types grown",
              min=0, max=30),
    FieldSpec("vsla_profits_ugx", "VSLA_Profits", 11, "decimal", "UGX", "feature", "Profits from VSLA participation (UGX)", min=0),
    FieldSpec("vsla_profits_usd", "VSLA_Profits", 12, "decimal", "USD", "derived", "Profits from VSLA participation (USD)", min=0),
    _m("season1_vegetable_income", "Season1VegetableIncome", 13, "Income from vegetables in season 1"),
    _m("season2_vegetable_income", "Season2VegatableIncome", 14, "Income from vegetables in season 2"),
    _m("vegetable_income", "VegetableIncome", 15, "Total income from vegetables", role="derived"),
    _m("season1_vegetable_value", "Season1VegetableValue", 16, "Value of vegetables produced in season 1"),
    _m("season2_vegetable_value", "Season2VegetableValue", 17, "Value of vegetables produced in season 2"),
    _m("seasonal_vegetable_value", "SeasonalVegetableValue", 18, "Total value of vegetables produced", role="derived"),
    _m("formal_employment", "FormalEmployment", 19, "Income from formal employment"),
    _m("personal_business", "PersonalBusinessAndSelfEmployment", 20, "Income from personal business and self-employment"),
    _m("casual_labour", "CasualLabour", 21, "Income from casual labour"),
    _m("remittances_and_gifts", "RemittancesAndGifts", 22, "Income from remittances and gifts"),
    _m("rent_income", "RentIncome", 23, "Income from renting property"),
    _m("season1_crop_income", "Season1CropIncome", 24, "Income from crop sales in season 1"),
    _m("season2_crop_income", "Season2CropIncome", 25, "Income from crop sales in season 2"),
    _m("seasonal_crop_income", "SeasonalCropIncome", 26, "Total income from crop sales", role="derived"),
    _m("perennial_crop_income", "PerenialCropIncome", 27, "Income from perennial crop sales"),
    _m("livestock_income", "LivestockIncome", 28, "Income from livestock sales"),
    _m("season1_agric_value", "Season1AgricValue", 29, "Value of agricultural produce in season 1"),
    _m("season2_agric_value", "Season2AgricValue", 30, "Value of agricultural produce in season 2"),
    _m("seasonal_agric_value", "SeasonalAgricValue", 31, "Total value of seasonal agricultural produce", role="derived"),
    _m("perennial_agric_value", "PerennialAgricValue", 32, "Value of perennial agricultural produce"),
    _m("agric_value", "AgricValue", 33, "Total value of agricultural produce", role="derived"),
    _m("livestock_income_consumed", "LivestockIncomeConsumed", 34, "Value of livestock consumed by the household"),
    _m("livestock_asset_value", "LivestockAssetValue", 35, "Value of livestock assets"),
    _m("household_income", "HouseholdIcome", 36, "Total household income", role="derived"),
    _m("consumption_residues", "Consumption+Residues", 37, "Household consumption plus residues", role="derived"),
    _m("income_consumption_residues", "HHIncome+Consumption+Residues", 38, "Income + consumption + residues (annual)", role="derived"),
    _m("income_consumption_assets_residues", "HHIncome+Consumption+Assets+Residues", 39,
       "Income + consumption + assets + residues (annual)", role="derived"),
    _m("assets_ugx", "Assets", 40, "Value of household assets (UGX)", role="derived", unit="UGX"),
    _m("assets_usd", "Assets", 41, "Value of household assets (USD)", role="derived"),
    _m("household_income_per_day", "HHIncome/Day", 42, "Household income per day", role="derived", unit="USD/day"),
    _m("consumption_per_day", "Consumption/Day", 43, "Consumption per day", role="derived", unit="USD/day"),
    _m("income_consumption_residues_per_day", "HHIncome+Consumption+Residues/Day", 44,
       "Income + consumption + residues per day: the progress measure", role="label", unit="USD/day"),
    _m("income_consumption_assets_residues_per_day", "HHIncome+Consumption+Assets+Residues/Day", 45,
       "Income + consumption + assets + residues per day", role="derived", unit="USD/day"),
    FieldSpec("hhh_sex", "hhh_sex", 46, "code", "code", "feature", "Sex of the household head (1 male, 2 female)", allowed=(1, 2)),
    _flag("hhh_read_write", "hhh_read_write", 47, "Household head can read and write"),
    FieldSpec("material_walls", "Material_walls", 48, "code", "code", "feature", "Wall material", allowed=(1, 2)),
    FieldSpec("radios_owned", "radios_owned", 49, "integer", "count", "feature", "Radios owned", min=0, max=50, warn_max=5),
    FieldSpec("phones_owned", "phones_owned", 50, "integer", "count", "feature", "Phones owned", min=0, max=50, warn_max=10,
              sentinels=(-99,)),
    FieldSpec("business_number", "business_number", 51, "integer", "count", "feature", "Businesses owned by the household",
              min=0, max=20, lenient=True),
    _flag("work_casual", "work_casual", 52, "Household members do casual work"),
    FieldSpec("work_salaried", "work_salaried", 53, "code", "code", "feature", "Household members in salaried work",
              allowed=(0, 1, 2)),
    _flag("save_mode_7", "save_mode_7", 54, "Saves in an RTV savings group"),
    FieldSpec("loan_from", "Loan_from", 55, "multiselect", "code", "feature", "Loan sources (space-separated codes)",
              allowed=(1, 2, 3, 4, 5, 6, 7, 8, 97, 99)),
    _flag("perennial_cropping", "perennial_cropping", 56, "Grows perennial crops"),
    FieldSpec("household_fertilizer", "household_fertilizer", 57, "code", "code", "feature",
              "Fertilizer type (99: none / not applicable)", allowed=(1, 2, 3, 99)),
    FieldSpec("daily_meals", "daily_meals", 58, "code", "count", "feature", "Meals a day", allowed=(1, 2, 3)),
    _flag("latrine_constructed", "latrine_constructed", 59, "Has a constructed latrine"),
    _flag("tippy_tap_available", "tippy_tap_available", 60, "Has a tippy tap"),
    _flag("soap_ash_available", "soap_ash_available", 61, "Soap or ash available for handwashing"),
    _flag("standard_hangline", "standard_hangline", 62, "Has a standard hangline"),
    _flag("kitchen_house", "kitchen_house", 63, "Has a separate kitchen house"),
    _flag("bathroom_constructed", "bathroom_constructed", 64, "Has a constructed bathroom"),
    _flag("swept_compound", "swept_compound", 65, "Compound is swept"),
    _flag("dish_rack_present", "dish_rack_present", 66, "Has a dish rack"),
    FieldSpec("composts", "composts", 67, "decimal", "code", "feature", "Composting (0, 0.5, 1)", allowed=(0, 0.5, 1)),
    _flag("non_bio_waste_mgt_present", "non_bio_waste_mgt_present", 68, "Manages non-biodegradable waste"),
    _flag("apply_liquid_manure", "apply_liquid_manure", 69, "Applies liquid manure"),
    FieldSpec("organic_pesticide_expenditure", "organic_pesticide_expenditure", 70, "decimal", "UGX", "feature",
              "Spending on organic pesticides (UGX)", min=0),
    _flag("water_control_practise", "water_control_practise", 71, "Practises water control"),
    _flag("soil_management", "soil_management", 72, "Practises soil management"),
    FieldSpec("food_banana_wilt_diseases", "food_banana_wilt_diseases", 73, "multiselect", "code", "feature",
              "Banana wilt diseases seen (space-separated codes)", allowed=(1, 2, 3)),
    _flag("postharvest_food_storage", "postharvest_food_storage", 74, "Practises post-harvest food storage"),
)

# Collection metadata carried by live device submissions (absent from the extract).
METADATA_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("submission_id", None, None, "uuid", "text", "metadata", "Device-generated submission UUID"),
    FieldSpec("device_id", None, None, "text", "text", "metadata", "Device identifier", pii="pseudonymous"),
    FieldSpec("field_officer", None, None, "text", "text", "metadata", "Field officer username", pii="pseudonymous"),
    FieldSpec("form_version", None, None, "text", "text", "metadata", "Form version"),
    FieldSpec("collected_at", None, None, "datetime", "ISO 8601 with offset", "metadata", "When the interview ended"),
    FieldSpec("gps_lat", None, None, "decimal", "degrees", "metadata", "GPS latitude", min=-90, max=90, pii="location"),
    FieldSpec("gps_lon", None, None, "decimal", "degrees", "metadata", "GPS longitude", min=-180, max=180, pii="location"),
    FieldSpec("gps_accuracy_m", None, None, "decimal", "metres", "metadata", "GPS accuracy", min=0),
    FieldSpec("cohort", None, None, "text", "text", "metadata", "Programme cohort"),
    FieldSpec("cycle", None, None, "text", "text", "metadata", "Programme cycle"),
    FieldSpec("evaluation_month", None, None, "integer", "month", "metadata", "Month of the programme evaluation", min=0, max=60),
    FieldSpec("evaluation_type", None, None, "code", "code", "metadata", "standard or check-in",
              allowed=("standard", "check-in")),
    FieldSpec("consent", None, None, "boolean", "flag", "metadata", "Respondent consent given"),
)

ALL_FIELDS: tuple[FieldSpec, ...] = SURVEY_FIELDS + METADATA_FIELDS
FIELDS_BY_NAME: dict[str, FieldSpec] = {f.name: f for f in ALL_FIELDS}

# The extract's header exactly as RTV writes it (duplicates and misspellings included).
RAW_HEADER: tuple[str, ...] = tuple(f.header for f in SURVEY_FIELDS if f.header is not None)

# Roles that may never become model inputs: they are the label, sums of the label, or identity.
FORBIDDEN_MODEL_ROLES: frozenset[str] = frozenset({"money", "derived", "label", "identifier", "metadata"})
MODEL_INPUT_ROLES: frozenset[str] = frozenset({"feature", "location"})

# The progress measure (USD/day) is this sum over 365 days, exactly, on every row of the extract.
TARGET_COMPONENTS: tuple[str, ...] = (
    "formal_employment", "personal_business", "casual_labour", "remittances_and_gifts", "rent_income",
    "season1_agric_value", "season2_agric_value", "perennial_agric_value", "livestock_income_consumed",
)
TARGET_FIELD = "income_consumption_residues_per_day"
TARGET_INPUTS: tuple[str, ...] = (TARGET_FIELD, *TARGET_COMPONENTS)  # what the label is worked out from

# Sum identities that hold exactly in the extract: (result, [(sign, term), ...]).
SUM_IDENTITIES: tuple[tuple[str, tuple[tuple[int, str], ...]], ...] = (
    ("vegetable_income", ((1, "season1_vegetable_income"), (1, "season2_vegetable_income"))),
    ("seasonal_vegetable_value", ((1, "season1_vegetable_value"), (1, "season2_vegetable_value"))),
    ("seasonal_crop_income", ((1, "season1_crop_income"), (1, "season2_crop_income"))),
    ("seasonal_agric_value", ((1, "season1_agric_value"), (1, "season2_agric_value"))),
    ("agric_value", ((1, "seasonal_agric_value"), (1, "perennial_agric_value"))),
    ("household_income", tuple((1, n) for n in (
        "formal_employment", "personal_business", "casual_labour", "remittances_and_gifts", "rent_income",
        "seasonal_crop_income", "perennial_crop_income", "livestock_income"))),
    ("consumption_residues", ((1, "agric_value"), (1, "livestock_income_consumed"), (-1, "seasonal_crop_income"),
                              (-1, "perennial_crop_income"), (-1, "livestock_income"))),
    ("income_consumption_residues", ((1, "household_income"), (1, "consumption_residues"))),
    ("income_consumption_assets_residues", ((1, "income_consumption_residues"), (1, "livestock_asset_value"))),
    ("assets_usd", ((1, "livestock_asset_value"),)),
)
# The chain above vouches for the label's measure only while every link holds a value: with an
# intermediate total left blank (household_income, say) the per-day value is checked against nothing.
# Then it is checked against the nine components directly (domain.md: components / 365, every row).
TARGET_CHAIN: tuple[str, ...] = ("income_consumption_residues", "household_income", "consumption_residues",
                                 "agric_value", "seasonal_agric_value", "seasonal_crop_income")
# Per-day columns: result = annual / 365.
PER_DAY_IDENTITIES: tuple[tuple[str, str], ...] = (
    ("household_income_per_day", "household_income"),
    ("consumption_per_day", "consumption_residues"),
    ("income_consumption_residues_per_day", "income_consumption_residues"),
    ("income_consumption_assets_residues_per_day", "income_consumption_assets_residues"),
)
# Currency pairs: usd = ugx / UGX_PER_USD.
CURRENCY_PAIRS: tuple[tuple[str, str], ...] = (
    ("vsla_profits_usd", "vsla_profits_ugx"),
    ("assets_usd", "assets_ugx"),
)
