"""The gates of the per-stage evidence model (PRD §13) and the enforcement levels (§8.1)."""

from __future__ import annotations

from enum import StrEnum

from signalfactory.core.records import Stage

G1_RESOLUTION = "G1_RESOLUTION"
G2_IDENTITY = "G2_IDENTITY"
G3_SCHEMA = "G3_SCHEMA"
G4_CONTRACT = "G4_CONTRACT"
G5_PII = "G5_PII"
DQ = "DQ"
CERTIFICATION = "CERTIFICATION"

GATE_NAMES = (G1_RESOLUTION, G2_IDENTITY, G3_SCHEMA, G4_CONTRACT, G5_PII, DQ)

#: Gates evaluated at each stage boundary, in evidence order.
STAGE_GATES: dict[Stage, tuple[str, ...]] = {
    Stage.BRONZE: (G1_RESOLUTION, G2_IDENTITY, G3_SCHEMA),
    Stage.SILVER: (G4_CONTRACT, G5_PII, DQ),
    Stage.GOLD: (G3_SCHEMA, G4_CONTRACT, CERTIFICATION),
}

#: Gates whose batch-level failure holds certification already at soft-fail (G2).
CRITICAL_GATES = frozenset({G3_SCHEMA, G4_CONTRACT, G5_PII})


class EnforcementLevel(StrEnum):
    """Progressive enforcement (PRD §8.1).

    G0 records evidence only; G1 also warns the owner; G2 soft-fail holds certification on a
    failed schema, contract or PII gate but only warns on DQ; G3 hard-fail holds on any failed
    gate. At every level rows that fail a row-level rule are quarantined: a certified table
    never holds a row that failed a rule.
    """

    G0 = "G0"
    G1 = "G1"
    G2 = "G2"
    G3 = "G3"

    def holds(self, gate: str) -> bool:
        if self is EnforcementLevel.G3:
            return True
        if self is EnforcementLevel.G2:
            return gate in CRITICAL_GATES
        return False

    def alerts(self) -> bool:
        return self is not EnforcementLevel.G0


TIER_LEVELS = {
    "TIER_1": EnforcementLevel.G3,
    "TIER_2": EnforcementLevel.G2,
    "TIER_3": EnforcementLevel.G1,
}


def level_for_tier(tier: str) -> EnforcementLevel:
    return TIER_LEVELS.get(tier.upper(), EnforcementLevel.G1)
