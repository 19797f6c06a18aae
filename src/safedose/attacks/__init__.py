"""Attacks on harm-set prompts as a sweep axis: Wei et al.'s simple attacks, jailbreak templates, prefilled answers
and transferred optimised prompts, each a registered, versioned transformation that keeps its plain prompt's id."""

from safedose.attacks._attacks import (
    ATTACKS,
    FIXED_PREFILL,
    PLACEHOLDER,
    TEMPLATE_SEED,
    Attack,
    JailbreakTemplate,
    PrefillAttack,
    TemplateAttack,
    TransferAttack,
    attack_specs,
    compliant_targets,
    parse_attack,
)
from safedose.attacks._records import PLAIN, AttackedPrompt, AttackInfo
from safedose.attacks._wei import (
    PREFIX_INJECTION_START,
    REFUSAL_SUPPRESSION_RULES,
    STYLE_INJECTION_RULES,
    base64_attack,
    prefix_injection,
    refusal_suppression,
    style_injection,
)

__all__ = [
    "ATTACKS",
    "FIXED_PREFILL",
    "PLACEHOLDER",
    "PLAIN",
    "PREFIX_INJECTION_START",
    "REFUSAL_SUPPRESSION_RULES",
    "STYLE_INJECTION_RULES",
    "TEMPLATE_SEED",
    "Attack",
    "AttackInfo",
    "AttackedPrompt",
    "JailbreakTemplate",
    "PrefillAttack",
    "TemplateAttack",
    "TransferAttack",
    "attack_specs",
    "base64_attack",
    "compliant_targets",
    "parse_attack",
    "prefix_injection",
    "refusal_suppression",
    "style_injection",
]
