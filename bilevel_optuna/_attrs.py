"""Names of the study and trial attributes this package writes: the storage data model.

These names are a public contract (users query them, the dashboard shows them); they are
documented in the README's "Storage data model" section. Change one only with a deprecation.
"""

from __future__ import annotations

# --- Study user attributes (inner, baseline and outer studies) ---
KIND = "bilevel:kind"  # "outer", "inner", "baseline", "heldout"
RUN = "bilevel:run"  # name of the bilevel run (= the outer study's name)
ARM = "bilevel:arm"  # group the study belongs to: "outer-0003", "tpe", "random", "llm-level0", ...
OBJECTIVE = "bilevel:objective"  # registry name of the objective
SEED = "bilevel:seed"  # the repeat's seed; studies with equal seeds are paired
REPEAT = "bilevel:repeat"  # repeat index 0..R-1
OPTIMUM = "bilevel:optimum"  # known optimum of the objective, or absent
OUTER_STUDY = "bilevel:outer_study"  # name of the outer study an inner study belongs to
OUTER_TRIAL = "bilevel:outer_trial"  # number of the outer trial an inner study belongs to
CONFIG = "bilevel:config"  # proposer configuration used by an inner study (JSON-able dict)
STOPPED = "bilevel:stopped"  # inner study of a configuration racing stopped: {outer_trial, ...}

# --- Outer study user attributes ---
RACING = "bilevel:racing"  # how the outer study races: rule, p_threshold, power (studies/_racing)

# --- Outer trial user attributes ---
INNER_STUDIES = "bilevel:inner_studies"  # list of inner study names
SUMMARY = "bilevel:summary"  # per-repeat values and the aggregate
JUDGED_ON = "bilevel:judged_on"  # {repeats, of, instances, stopped[, pvalue, incumbent, reason]}

# --- Inner trial user attributes, written by LLMSampler ---
SOURCE = "llm:source"  # "llm", "repaired", "fallback", "mechanism", "queued"
ATTEMPTS = "llm:attempts"  # model calls spent on this proposal
RATIONALE = "llm:rationale"  # the model's stated reason, truncated
REPAIRS = "llm:repairs"  # list of repairs applied to the answer
PROMPT_TOKENS = "llm:prompt_tokens"
COMPLETION_TOKENS = "llm:completion_tokens"
LATENCY = "llm:latency_s"
MODEL = "llm:model"
REQUEST_HASH = "llm:request_hash"
ERROR = "llm:error"  # last error when the proposal fell back
TAKEN_BY = "llm:taken_by"  # the mechanism that took the trial over (source "mechanism")
QUEUED_BY = "llm:queued_by"  # number of the trial whose model call proposed this queued one
MECHANISMS = "llm:mechanisms"  # {name: {"hook": calls, ..., "changed": n, "errors": [...]}}

# --- Inner trial system attributes (not shown on the dashboard) ---
EXCHANGES = "bilevel_optuna:exchanges"  # [{hash, reply}] for replay

# --- Generated mechanisms (study system attributes of the outer study) ---
MECHANISM_SOURCE_PREFIX = "bilevel_optuna:mechanism:"  # + sha256 -> {source, origin, validation}

# --- Failed trials: why, in one short line the LLM prompt can show ---
FAILURE_REASON = "bilevel:failure"  # e.g. "exit code 1: CUDA out of memory"

# --- Noisy objectives: the noise-free value of a trial's configuration, for regret ---
TRUE_VALUE = "bilevel:true_value"
