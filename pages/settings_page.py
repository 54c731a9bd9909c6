"""Settings page: active models, device, database; edit the settings file."""

import pandas as pd
import streamlit as st

import access
import services
import settings

access.require_login()  # nothing below runs for a visitor who has not signed in

st.title("Settings")
try:
    env = services.settings.environment()
except ValueError as exc:  # a malformed settings file
    st.error(str(exc))
    st.stop()

st.metric("Device", env["device"])
rows = [{"setting": k, "value": v, "from": env["sources"][k], "environment variable": env["env_vars"][k]}
        for k, v in env["settings"].items()]
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"Settings file: `{env['settings_file']}`. Environment variables override it.")
for problem in env["problems"]:  # settings that would fail at first use: said here, before the Studio trips
    st.error(problem)

st.subheader("Models loaded in this server process")
if env["loaded_models"]:
    for line in env["loaded_models"]:
        loads = env["model_loads"].get(line, 1)
        st.write(f"- {line} · loaded {'once' if loads == 1 else f'{loads} times'}")
else:
    st.write("None yet: models load on first use.")

st.subheader("Change models")
st.write("Any Hugging Face model id or local folder works. Offline, use a local folder. "
         "Changes apply to the next model load (restart the dashboard to free the old model).")
with st.form("settings"):
    text_model = st.text_input("Text model", value=env["settings"]["text_model"])
    embedding_model = st.text_input("Embedding model", value=env["settings"]["embedding_model"])
    image_model = st.text_input("Banner renderer", value=env["settings"]["image_model"],
                                help="'procedural' (offline) or a diffusers text-to-image model id / local folder")
    brand_kit = st.text_input("Brand kit (JSON file)", value=env["settings"]["brand_kit"])
    device = st.selectbox("Device", ["auto", "cpu", "cuda", "mps"],
                          index=["auto", "cpu", "cuda", "mps"].index(env["settings"]["device"])
                          if env["settings"]["device"] in ("auto", "cpu", "cuda", "mps") else 0)
    writers = list(settings.BRIEF_WRITERS)
    brief_writer = st.selectbox("Brief writer", writers, index=writers.index(env["settings"]["brief_writer"]),
                                help="Who writes each banner's art direction: rules from the profile, or the text "
                                     "model (with the brief adapter, when one is set)")
    engines = list(settings.ENGINES)
    engine = st.selectbox("Text engine", engines, index=engines.index(env["settings"]["engine"])
                          if env["settings"]["engine"] in engines else 0,
                          help="auto: llama.cpp on the CPU (the model is exported to GGUF once), transformers on "
                               "a GPU")
    if st.form_submit_button("Save settings"):
        try:
            path = services.settings.save_settings({"text_model": text_model, "embedding_model": embedding_model,
                                           "device": device, "image_model": image_model, "brand_kit": brand_kit,
                                           "brief_writer": brief_writer, "engine": engine})
            st.success(f"Saved to {path}")
        except ValueError as exc:  # a brand kit that does not load, a value the setting cannot take
            st.error(f"Nothing was saved: {exc}")
