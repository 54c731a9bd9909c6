"""AdLoop dashboard entry point: lists the pages explicitly (st.navigation), behind the optional login.

Page icons are Material Symbols, which Streamlit ships as a web font: emoji icons drew as empty boxes on
machines without an emoji font."""

import streamlit as st

import access
import settings

st.set_page_config(page_title="AdLoop", page_icon=":material/ads_click:", layout="wide")

navigation = access.navigation([  # until the visitor signs in (when a login is configured): the login only
    st.Page("pages/audience.py", title="Audience", icon=":material/group:", default=True),
    st.Page("pages/studio.py", title="Studio", icon=":material/brush:", url_path="studio"),
    st.Page("pages/campaign_lab.py", title="Campaign Lab", icon=":material/science:", url_path="campaign-lab"),
    st.Page("pages/reward_tuning.py", title="Reward Tuning", icon=":material/tune:", url_path="reward-tuning"),
    st.Page("pages/settings_page.py", title="Settings", icon=":material/settings:", url_path="settings"),
])
st.sidebar.caption("AdLoop · from user history to tuned ad generators")
try:
    navigation.run()
except settings.ConfigError as exc:  # a setting that cannot be used (database, settings file): named, not a trace
    st.error(f"{exc}\n\nFix it in the settings file or the environment variable, then reload.")
