"""Notebook parameters (papermill): unknown names, types and ranges checked before any work.

Each notebook's parameters cell ends with `param_defaults = params.snapshot(globals())`; the cell after it (papermill
injects its `injected-parameters` cell in between) runs `params.check(globals(), param_defaults, "<notebook>")`: a name
that is not a parameter, a value whose type differs from its default's, or one outside `RULES` is an error naming it.
Parameter files (configs/*/*.yaml) and a sweep's cell parameters are checked the same way, without a kernel, against
the parameters cell parsed from the notebook (`notebook_defaults`).
"""

from __future__ import annotations

import ast
import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

from .validate import ConfigError, Rule, check_rule, coerce, name_rule

UPPER = re.compile(r"[A-Z][A-Z0-9_]*")
PLAIN = (type(None), bool, int, float, str, list, dict, tuple)
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def length(n: int) -> Rule:
    """Rule: a list of exactly `n` items."""
    return lambda v: None if len(v) == n else f"must have {n} items, got {v!r}"


def empty_or_length(n: int) -> Rule:
    """Rule: an empty list (a default taken from elsewhere) or a list of exactly `n` items."""
    return lambda v: None if len(v) in (0, n) else f"must be [] or have {n} items, got {v!r}"


def non_empty(v: Any) -> str | None:
    """Rule: a non-empty list."""
    return None if len(v) else "must not be empty"


def optional_name(v: str) -> str | None:
    """Rule: a plain run name, or "" for none."""
    return None if v == "" else name_rule(v)


def shipped_or_none(v: str) -> str | None:
    """Rule: the name of a shipped model (data/pretrained/), or "" for none."""
    from .pretrained import shipped_names
    if v == "" or v in (names := shipped_names()):
        return None
    return f"must be a shipped model ({', '.join(names) or 'none shipped'}; python -m piwm_lib.pretrained list) or ''"


def _sweep(v: dict) -> str | None:
    """Rule of notebook 06's SWEEP: what SweepConfig accepts."""
    from .sweep import SweepConfig  # here: sweep imports this module
    try:
        SweepConfig(name="check", **v)
    except (TypeError, ValueError) as e:
        return f"is not a valid sweep: {e}"
    return None


def _model_mask(v: str) -> str | None:
    """Rule of notebook 06's CURVE_MODEL: "model/mask" of the sweep's grid names."""
    from .sweep import MASKS
    from .unet import UPSAMPLER_OF
    model, _, mask = v.partition("/")
    ok = model in UPSAMPLER_OF and mask in MASKS
    return None if ok else f"must be 'model/mask' with model in {sorted(UPSAMPLER_OF)} and mask in {sorted(MASKS)}, " \
                           f"got {v!r}"


def _rules() -> dict[str, dict[str, Rule | list[Rule]]]:
    """Ranges and choices of each notebook's parameters (types come from the defaults)."""
    from .env import SCENARIOS
    from .evaluation import STARTS
    from .masks import CHANNELS, KINDS, TRAIN_WEIGHTS
    from .sampler import PRESETS as SAMPLERS
    from .unet import UPSAMPLER_OF
    seed, frames = {"SEED": ">= 0"}, "[2, 100000]"
    return {
        "01_collect_data": {**seed, "EPISODES": ">= 1", "FRAMES": frames, "WORKERS": ">= 1",
                            "AGENT": ("mcts", "idm", "random"), "MCTS_BUDGET": ">= 1", "MCTS_HORIZON": ">= 1",
                            "DECISION_FRAMES": ">= 1", "LANE_TARGET_EVERY": ">= 0", "SPEED_TARGET_EVERY": ">= 0",
                            "POLICY_HZ": ">= 1", "SIMULATION_HZ": ">= 1", "LANES": ">= 0", "VEHICLES": ">= 0",
                            "SCENARIO": tuple(SCENARIOS),
                            "TEST_FRACTION": "[0, 1)", "COST_DECISIONS": ">= 1"},
        "02_soft_masks": {**seed, "EPISODE": ">= 0", "FRAME": ">= 0", "EVAL_EPISODES": ">= 0", "EVAL_FRAMES": ">= 0",
                          "MATCH_RADIUS_PX": "> 0", "MIN_BLOB_PX": ">= 1", "COLOUR_MIN": "[0, 1]",
                          "COLOUR_MARGIN": "[0, 1]", "S_EGO": "> 0", "SIGMA_MIN": "> 0", "R_GLOB": "> 0",
                          "TRAIN_WEIGHTS": [length(3), ">= 0"], "INFER_WEIGHTS": [length(3), ">= 0"],
                          "DROPOUT": "[0, 1]", "GRID": [empty_or_length(2), ">= 1"], "DROPOUT_DRAWS": ">= 1",
                          "CRASH_SEED": ">= 0", "CRASH_FRAMES": frames, "BENCH_BATCH": ">= 1", "BENCH_REPEATS": ">= 1"},
        "03_train_edm": {**seed, "MODEL": tuple(UPSAMPLER_OF), "MASK": KINDS, "MASK_WEIGHTS": tuple(TRAIN_WEIGHTS),
                         "MASK_DROPOUT": "[0, 1]", "MASK_CHANNELS": [length(2), CHANNELS],
                         "MASK_COLOUR": [length(2), "[0, 1]"], "AR_STEPS": ">= 1", "BATCH_SIZE": ">= 1",
                         "GRAD_ACCUM": ">= 1", "STEPS": ">= 1", "LR": "> 0", "WARMUP_STEPS": ">= 0",
                         "MIXED_PRECISION": ("no", "bf16", "fp16"), "UP_STEPS": ">= 0", "UP_BATCH_SIZE": ">= 1",
                         "WORKERS": ">= 0", "CKPT_EVERY": ">= 1", "LOG_EVERY": ">= 1", "NUM_PROCESSES": ">= 1",
                         "SIGMAS": [non_empty, "> 0"], "LOSS_SIGMAS": ">= 1", "BAR_WINDOWS": ">= 0",
                         "BAR_HORIZON": ">= 1"},
        "04_sample_rollout": {**seed, "MODEL_RUN": optional_name, "PRETRAINED": shipped_or_none,
                              "FALLBACK_STEPS": ">= 0", "SAMPLER": tuple(SAMPLERS),
                              "HORIZON": ">= 1", "ROLLOUTS": ">= 1", "WARM_OFFSET": ">= 0", "WARM_PIXEL": ">= 0",
                              "SPEED_REPEATS": ">= 1"},
        "05_evaluate": {**seed, "MODEL_RUN": optional_name, "PRETRAINED": shipped_or_none,
                        "UPSAMPLER_RUN": optional_name, "FALLBACK_STEPS": ">= 0",
                        "SAMPLER": tuple(SAMPLERS), "STARTS": [non_empty, STARTS], "WARM_OFFSET": ">= 0",
                        "WARM_PIXEL": ">= 0", "WARM_SIGMA_MAX": "> 0", "HORIZON": ">= 1", "MAX_WINDOWS": ">= 0",
                        "ROLLOUT_BATCH": ">= 1", "ENCODER_STEPS": ">= 0", "W_TEC": ">= 0", "W_IEC": ">= 0",
                        "W_KIR": ">= 0", "BOOTSTRAP": ">= 1", "PLANT_SEEDS": ">= 0", "PLANT_FRAMES": ">= 2"},
        "06_ablations": {**seed, "SWEEP": _sweep, "BOOTSTRAP": ">= 1", "CURVE_MODEL": _model_mask,
                         "CURVE_NOISE": [non_empty, ">= 0"], "MASK_WEIGHTS": [non_empty, ">= 0"],
                         "CURVE_WINDOWS": ">= 1", "CURVE_HORIZON": ">= 1"},
        "07_scenarios": {**seed, "SCENARIOS": [non_empty, tuple(SCENARIOS)], "PROFILE": optional_name,
                         "EPISODES": ">= 1", "FRAMES": frames, "FALLBACK_STEPS": ">= 1", "HORIZON": ">= 1",
                         "MAX_WINDOWS": ">= 1", "STARTS": [non_empty, tuple(STARTS)], "BOOTSTRAP": ">= 1"},
    }


def rules(notebook: str) -> dict[str, Rule | list[Rule]]:
    """The rules of one notebook's parameters; every notebook's RUN_NAME is a plain name."""
    return {"RUN_NAME": name_rule, **_rules().get(notebook, {})}


def _library_constant(name: str, value: Any) -> bool:
    """Whether `value` is the library's own constant of that name (imported, not a parameter)."""
    return any(getattr(m, name, None) is value for k, m in list(sys.modules.items()) if k.startswith("piwm_lib"))


def snapshot(ns: dict) -> dict:
    """The parameters defined so far in a notebook namespace: UPPER_CASE names holding plain data (not modules, not the
    library's constants), copied; the other UPPER_CASE names are recorded as present so `check` can tell them apart."""
    params, other = {}, {}
    for name, value in ns.items():
        if not UPPER.fullmatch(name):
            continue
        if isinstance(value, PLAIN) and not _library_constant(name, value):
            params[name] = copy.deepcopy(value)
        else:
            other[name] = value
    return {"params": params, "other": other}


def check_value(name: str, value: Any, default: Any, rule: Rule | list[Rule] | None = None) -> Any:
    """`value` checked against the type of `default` (an int where a float is expected, and a whole float where an
    int is, are fine; a None default takes anything) and `rule`; returned as the default's type."""
    value = coerce(name, value, _type_of(default)) if default is not None else value
    if isinstance(default, list) and default:
        item = _type_of(0.0 if all(isinstance(d, float | int) for d in default) and any(
            isinstance(d, float) for d in default) else default[0])
        value = [coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
        if isinstance(default[0], list) and default[0]:
            value = [check_value(f"{name}[{i}]", v, default[0]) for i, v in enumerate(value)]
    for r in rule if isinstance(rule, list) else [rule] if rule is not None else []:
        check_rule(name, value, r)
    return value


def _type_of(default: Any) -> type:
    """The type a parameter with this default must have (a tuple default: a list)."""
    return list if isinstance(default, tuple) else type(default)


def check_values(notebook: str, values: dict, defaults: dict, what: str = "") -> dict:
    """`values` (parameter -> value, e.g. a papermill -f file) checked against a notebook's defaults and rules;
    an unknown name is an error listing the known ones. Returns the values as checked."""
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"{what or notebook}: unknown parameter(s) {', '.join(unknown)} of notebook {notebook}; "
                          f"known: {', '.join(sorted(defaults))}")
    r = rules(notebook)
    try:
        return {k: check_value(k, v, defaults[k], r.get(k)) for k, v in values.items()}
    except ConfigError as e:
        raise ConfigError(f"{what}: {e}" if what else str(e)) from None


def check(ns: dict, snap: dict, notebook: str) -> None:
    """Check a notebook's namespace after papermill's overrides against the `snapshot` of its defaults: unknown
    UPPER_CASE names, types and `rules(notebook)`; whole floats given for int parameters are stored back as ints."""
    params, other = snap["params"], snap["other"]
    new = {k: v for k, v in ns.items() if UPPER.fullmatch(k) and k not in params and other.get(k, ns) is not v}
    given = {**{k: ns[k] for k in params if k in ns}, **new}
    ns.update(check_values(notebook, given, params, f"notebook {notebook}"))


def notebook_defaults(notebook: str | Path) -> dict:
    """The parameters cell of notebooks/<notebook>.ipynb parsed without a kernel: name -> default value."""
    path = Path(notebook) if str(notebook).endswith(".ipynb") else NOTEBOOKS / f"{notebook}.ipynb"
    cells = json.loads(path.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and UPPER.fullmatch(node.targets[0].id):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out
