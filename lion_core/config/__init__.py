"""The run config: one frozen, typed model per run, loaded from YAML.

Defaults are the settings of the paper's official code (Lion, Jiang et al. 2023: gpt-3.5-turbo as
teacher, referee and generator, and the student's fine-tune at learning rate 2e-5, 3 epochs, batch 128,
on 8 GPUs with DeepSpeed ZeRO-3). Unknown keys are errors, so a typo never silently falls back to a
default. `load_config` reports every invalid field in one error.

One module per part: `roles` (the API roles), `student` (the student and its fine-tune), `run` (the loop,
data, storage, orchestration, evaluation and `RunConfig`), `identity` (what a resume may change, and the
config hash), `loading` (YAML), `explain` (`lion config explain`). Whether a field is an operation or a
path is marked on the field itself (`lion_core.config.base`).
"""

from lion_core.config.base import LOCAL_PATH, OPERATION, NonNegFloat, PositiveInt
from lion_core.config.identity import config_changes
from lion_core.config.loading import PATH_FIELDS, load_config, parse_config
from lion_core.config.roles import (
    EMBEDDED,
    EMBEDDED_CHAT_MODEL,
    EMBEDDED_MODELS,
    STANDIN_GENERATOR,
    STANDIN_REFEREE,
    ApiRole,
    BatchSettings,
    GeneratorConfig,
    Price,
    RateLimits,
    RefereeConfig,
    RetryPolicy,
    Sampling,
    TeacherConfig,
)
from lion_core.config.run import (
    OPERATIONS,
    BudgetConfig,
    DataConfig,
    EvaluationConfig,
    LoopConfig,
    OrchestrationConfig,
    RunConfig,
    StorageConfig,
    identity_of,
)
from lion_core.config.student import LoraSettings, StudentConfig, StudentGeneration, TrainingConfig

__all__ = [
    "EMBEDDED", "EMBEDDED_CHAT_MODEL", "EMBEDDED_MODELS", "LOCAL_PATH", "OPERATION", "OPERATIONS", "PATH_FIELDS",
    "STANDIN_GENERATOR", "STANDIN_REFEREE", "ApiRole", "BatchSettings", "BudgetConfig", "DataConfig", "EvaluationConfig",
    "GeneratorConfig", "LoopConfig", "LoraSettings", "NonNegFloat", "OrchestrationConfig", "PositiveInt", "Price",
    "RateLimits", "RefereeConfig", "RetryPolicy", "RunConfig", "Sampling", "StorageConfig", "StudentConfig",
    "StudentGeneration", "TeacherConfig", "TrainingConfig", "config_changes", "identity_of", "load_config",
    "parse_config",
]
