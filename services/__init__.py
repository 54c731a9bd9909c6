"""The service layer: every action of the dashboard, callable from the CLI, the API and tests without a browser.

One module per domain (audience, studio, campaigns, serving, tuning, settings). Pages, `cli.py` and the API call these
functions and nothing below them, so each action has one implementation; `tuning/` and `rewards/` never import
them. Functions take an optional `progress(fraction, message)` callback for slow work.
"""

from services import audience, campaigns, common, segment_job, serving, settings, studio, tuning

__all__ = ["audience", "campaigns", "common", "segment_job", "serving", "settings", "studio", "tuning"]
