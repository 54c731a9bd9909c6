"""Rewards: collaborative-filtering appeal and (later) the simulated audience. Knows nothing of pages."""
