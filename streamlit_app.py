"""AdLoop dashboard entry point: lists the pages explicitly (st.navigation), behind the optional login."""

import streamlit as st

import access
import settings

st.set_page_config(page_title="AdLoop", page_icon="🎯", layout="wide")

navigation = access.navigation([  # until the visitor signs in (when a login is configured): the login only
    st.Page("pages/audience.py", title="Audience", icon="👥", default=True),
    st.Page("pages/studio.py", title="Studio", icon="🎨", url_path="studio"),
    st.Page("pages/campaign_lab.py", title="Campaign Lab", icon="🧪", url_path="campaign-lab"),
    st.Page("pages/reward_tuning.py", title="Reward Tuning", icon="🎯", url_path="reward-tuning"),
    st.Page("pages/settings_page.py", title="Settings", icon="⚙️", url_path="settings"),
])
st.sidebar.caption("AdLoop · from user history to tuned ad generators")
try:
    navigation.run()
except settings.ConfigError as exc:  # a setting that cannot be used (database, settings file): named, not a trace
    st.error(f"{exc}\n\nFix it in the settings file or the environment variable, then reload.")
