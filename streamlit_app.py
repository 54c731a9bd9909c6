"""AdLoop dashboard entry point: lists the pages explicitly (st.navigation)."""

import streamlit as st

st.set_page_config(page_title="AdLoop", page_icon="🎯", layout="wide")

navigation = st.navigation([
    st.Page("pages/audience.py", title="Audience", icon="👥", default=True),
    st.Page("pages/studio.py", title="Studio", icon="🎨", url_path="studio"),
    st.Page("pages/campaign_lab.py", title="Campaign Lab", icon="🧪", url_path="campaign-lab"),
    st.Page("pages/reward_tuning.py", title="Reward Tuning", icon="🎯", url_path="reward-tuning"),
    st.Page("pages/settings_page.py", title="Settings", icon="⚙️", url_path="settings"),
])
st.sidebar.caption("AdLoop · from user history to tuned ad generators")
navigation.run()
