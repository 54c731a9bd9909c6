"""The bounds on every number a person can type, kept in one place.

The command line, the pages and the services all check against these, so an absurd value (a hundred
thousand variants, zero or ten million training steps, a negative learning rate) is refused before any
work starts, with a message that states the allowed range, instead of starting a run that fails or
never ends. Pages use `low`/`high` for their widgets; the CLI uses `argument` as an argparse type; the
services call `check`, which also guards callers that bypass both.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real


@dataclass(frozen=True)
class Limit:
    """An inclusive range for one kind of number; `whole` numbers must also be integers."""

    what: str
    low: float
    high: float
    whole: bool = True

    def bounds(self) -> tuple[int, int] | tuple[float, float]:
        """(low, high) typed for a widget: Streamlit refuses a number input that mixes ints and floats."""
        kind = int if self.whole else float
        return kind(self.low), kind(self.high)

    def describe(self) -> str:
        """The allowed range in words, e.g. 'a whole number from 1 to 16'."""
        if self.whole:
            return f"a whole number from {int(self.low):,} to {int(self.high):,}"
        return f"a number from {self.low:g} to {self.high:g}"

    def check(self, value: object) -> int | float:
        """The value as int (whole) or float if it is within the limit; else ValueError saying the range."""
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and self.low <= value <= self.high and (not self.whole or float(value).is_integer())
        if not ok:
            raise ValueError(f"{self.what} must be {self.describe()} (got {value!r})")
        return int(value) if self.whole else float(value)

    def argument(self, text: str) -> int | float:
        """An argparse `type`: the same check, reported as a usage error naming the option."""
        try:
            value = int(text) if self.whole else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {self.describe()}") from None
        try:
            return self.check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


SEED = Limit("the seed", 0, 2**31 - 1)

# Studio: every variant costs an LLM generation and three banners, so a request is capped as a whole.
VARIANTS_PER_USER = Limit("variants per user", 1, 16)
CANDIDATES = Limit("candidates per variant", 1, 8)
SEGMENT_USERS = Limit("users drawn from a segment", 1, 64)
VARIANTS_PER_REQUEST = 64
SAMPLES_PER_REQUEST = 256  # candidates drawn in one request, all slots together (a round)
# Segment jobs (services/segment_job.py): a whole audience in batches, each batch within the request caps above
JOB_USERS = Limit("users of a segment job", 1, 1_000_000)
BATCH_USERS = Limit("users per batch", 1, 64)
WORKERS = Limit("Ray workers", 1, 4096)

# Campaign Lab and the simulated audience
IMPRESSIONS = Limit("impressions", 100, 200_000)
CAMPAIGN_USERS = Limit("simulated users", 1, 100_000)
SIMULATOR_USERS = Limit("users for the simulator checks", 1, 10_000)

# Audience and evaluation
LIST_LIMIT = Limit("the number of users listed", 1, 100_000)
EVAL_USERS = Limit("users evaluated", 1, 100_000)
NEGATIVES = Limit("sampled negatives", 1, 10_000)
HELD_OUT_USERS = Limit("held-out users", 2, 256)
BEST_OF = Limit("best-of-N samples", 2, 16)
DRAWS = Limit("draws per prompt", 1, 16)

# Reward Tuning: keys are TuningConfig fields
TUNING = {
    "max_steps": Limit("training steps", 1, 100_000),
    "sft_steps": Limit("supervised steps", 1, 100_000),
    "sft_per_prompt": Limit("accepted samples per prompt that SFT learns", 1, 16),
    "learning_rate": Limit("the learning rate", 1e-6, 0.1, whole=False),
    "lora_r": Limit("the LoRA rank", 1, 256),
    "lora_alpha": Limit("the LoRA alpha", 1, 1024),
    "beta": Limit("the KL coefficient (beta)", 0, 10_000, whole=False),  # each method's own range: BETA
    "users": Limit("training users", 1, 10_000),
    "prompts_per_step": Limit("prompts per step", 1, 64),
    "num_generations": Limit("generations per prompt", 2, 16),
    "max_completion_length": Limit("max completion tokens", 8, 256),
    "save_steps": Limit("steps between checkpoints", 1, 100_000),
    "eval_steps": Limit("steps between held-out checks", 0, 100_000),
    "eval_users": Limit("held-out users in the live check", 1, 1_000),
    "temperature": Limit("the sampling temperature", 0.01, 5, whole=False),
    "lora_dropout": Limit("the LoRA dropout", 0, 0.9, whole=False),
    "time_budget_minutes": Limit("the time budget in minutes", 0, 10_080, whole=False),
    "min_impressions": Limit("impressions per variant before logged CTRs are compared", 1, 1_000_000),
    "seed": SEED,
}
# the KL coefficient on each method's scale: a fraction for the LLM methods, thousands for Diffusion-DPO (its
# loss scales a difference of denoising errors, Wallace et al. use 2500-5000); DPO needs beta above 0
BETA = {"grpo": Limit("GRPO's KL coefficient (beta)", 0, 1, whole=False),
        "rloo": Limit("RLOO's KL coefficient (beta)", 0, 1, whole=False),
        "dpo": Limit("DPO's beta", 0.001, 10, whole=False),
        "best_of_n_sft_dpo": Limit("the recipe's DPO beta", 0.001, 10, whole=False),
        "diffusion_dpo": Limit("Diffusion-DPO's beta", 1, 10_000, whole=False)}
WAIT_SECONDS = Limit("seconds to wait", 1, 7 * 24 * 3600)
PORT = Limit("the port", 1, 65_535)
COMMIT_BATCH = Limit("writes per commit", 1, 100_000)
RATE_LIMIT = Limit("requests a second", 0, 1_000_000, whole=False)


def check_all(values: Mapping[str, object], limits: Mapping[str, Limit]) -> None:
    """Check every value that has a limit (None means 'use the default' and is skipped); first failure raises."""
    for key, limit in limits.items():
        if values.get(key) is not None:
            limit.check(values[key])
