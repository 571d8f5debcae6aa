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
STATE = "llm:state"  # optimizer whose state the prompt showed ("cmaes", "tpe"), when it showed one
MECHANISMS = "llm:mechanisms"  # {name: {"version", "hooks": {hook: calls}, "changed", "errors", "off", ...}}: samplers/_record.py

# --- Study user attributes, written by LLMSampler (samplers/_spend.py) ---
# Trials proposed by the base sampler: {"trials": n, "why": {reason: n}, "last_error": "..."}
FALLBACK = "llm:fallback"
# Where the spend cap was reached: {"trial": n, "cap": "max_tokens_total=...: ... spent"}
SPEND_CAP = "llm:spend_cap"

# --- Inner trial system attributes (not shown on the dashboard) ---
EXCHANGES = "bilevel_optuna:exchanges"  # [{hash, reply}] for replay

# --- Generated mechanisms (study system attributes of the outer study) ---
MECHANISM_SOURCE_PREFIX = "bilevel_optuna:mechanism:"  # + sha256 -> {source, origin, validation}

# --- Failed trials: why, in one short line the LLM prompt can show ---
FAILURE_REASON = "bilevel:failure"  # e.g. "exit code 1: CUDA out of memory"

# --- Noisy objectives: the noise-free value of a trial's configuration, for regret ---
TRUE_VALUE = "bilevel:true_value"

# --- Bilevel run: what the run writes beside the attributes above ---
SAMPLER = "bilevel:sampler"  # study: the baseline sampler and its pinned settings, e.g. TPE's
BEST_CONFIG = "bilevel:best_config"  # outer study: the best proposer configuration (dict)
BEST_ARM = "bilevel:best_arm"  # outer study: the arm name of that configuration
REFERENCE = "bilevel:reference"  # outer trial: enqueued as a reference point ("llm-level0")
RESUMED_FROM = "bilevel:resumed_from"  # outer trial: number of the trial Ctrl-C stopped
REPORT_ARTIFACTS = "bilevel:report_artifacts"  # outer study: {file name: artifact id}
ARTIFACT_STORE = "bilevel:artifact_store"  # outer study: where its artifacts are (a folder's path)
ROLE = "bilevel:role"  # every study of a run: what it is, in words ("inner: outer trial 3, ...")

# --- Workers (studies/_worker.py, studies/_workqueue/) ---
SETTINGS = "bilevel:settings"  # outer study: what a worker rebuilds the run from
TASKS = "bilevel:tasks"  # outer trial: its inner studies (task keys), in (repeat, objective) order
SLOT = "bilevel:slot"  # outer trial: the budget slot whose claim created it
WORKER = "bilevel:worker"  # inner trial: the worker that ran it (host:pid:id)

# --- Level 2: mechanism research (the research study `<run>/research` of a bilevel run) ---
# A study of kind "research" per bilevel run holds one trial per generated source: COMPLETE
# (value 1) when the gate accepted it, FAIL when it rejected it; its user attributes say why.
RESEARCH_DISABLED_PREFIX = "research:disabled:"  # inner study: + name -> why it was disabled
RESEARCH_SUFFIX = "/research"  # research study name = run name + this
GEN_NAME = "research:name"  # the name the mechanism is registered and recorded under
GEN_SOURCE = "research:source"  # the source text, as checked
GEN_SHA = "research:sha256"  # SHA-256 of the source
GEN_ROUND = "research:round"  # the research round that wrote it
GEN_IDEA = "research:idea"  # the idea behind it, in the model's words
GEN_MODE = "research:mode"  # "code" (full source) or "compose" (rules under a JSON schema)
GEN_STATUS = "research:status"  # "accepted" or "rejected"
GEN_CHECK = "research:check"  # the gate's result: stage, reasons, hooks, space, smoke-run calls
GEN_ATTEMPT = "research:attempt"  # 0 for the first answer, 1.. for repairs
GEN_PROMPTS = "research:prompts"  # request hashes of the exchanges that led to this source
# Study user attributes of the research study:
RESEARCH_EFFECT_PREFIX = "research:effect:"  # + name -> measured effect against the incumbent
RESEARCH_ROUND_PREFIX = "research:round:"  # + round -> diagnosis, ideas, choice, outcome
# Study system attributes of the research study: every prompt and answer, for replay.
RESEARCH_EXCHANGE_PREFIX = "research:exchange:"  # + request hash -> {request, reply}
