"""Reward tuning of the ad writer: prompt datasets, TRL trainers (GRPO, RLOO, DPO) with LoRA, the run manager
(one worker process per run, status and metrics in the store) and the held-out evaluation by the judge audience."""
