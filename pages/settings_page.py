"""Settings page: active models, device, database; edit the settings file."""

import pandas as pd
import streamlit as st

import access
import services
import settings
from generation import compose

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


def lines(text: str) -> list[str]:
    """The non-empty lines of a text area, trimmed: one banned word or call to action each."""
    return [line.strip() for line in text.splitlines() if line.strip()]


st.subheader("Brand kit")
try:
    kit = compose.configured_brand_kit()
except ValueError:  # named among the problems above; edit from the built-in kit
    kit = compose.load_brand_kit()
with st.form("brand_kit_editor"):
    cols = st.columns([3, 1, 1])
    name = cols[0].text_input("Brand name", value=kit.name, max_chars=40, key="kit_name")
    primary = cols[1].color_picker("Primary colour", value=kit.primary)
    accent = cols[2].color_picker("Accent colour", value=kit.accent)
    voice = st.text_area("Voice", value=kit.voice, max_chars=300)
    cols = st.columns(2)
    banned = cols[0].text_area("Banned words (one per line)", value="\n".join(kit.banned_words),
                            key="kit_banned")
    ctas = cols[1].text_area("Calls to action (one per line, variants take them in turn)",
                             value="\n".join(kit.calls_to_action), key="kit_ctas")
    cols = st.columns([1, 2])
    default_cta = cols[0].text_input("Default call to action", value=kit.default_cta, max_chars=25)
    disclaimer = cols[1].text_input("Required disclaimer", value=kit.required_disclaimer, max_chars=200,
                                   key="kit_disclaimer")
    logo = st.text_input("Logo file (absolute path of a PNG, JPEG or WebP; empty: the brand name is typeset)",
                         value=kit.logo, key="kit_logo",
                         help="Drawn in the brand's place on every banner, scaled to fit, transparency kept")
    if st.form_submit_button("Save brand kit", key="save_kit"):
        try:
            path = services.settings.save_brand_kit({
                "name": name, "voice": voice, "banned_words": lines(banned), "required_disclaimer": disclaimer,
                "default_cta": default_cta, "calls_to_action": lines(ctas),
                "colours": {"primary": primary, "accent": accent}, "logo": logo.strip()})
        except ValueError as exc:  # every problem names its field
            st.error(f"Nothing was saved: {exc}")
        else:
            st.success(f"Saved to {path}; the next variants use it.")
            if settings.load().brand_kit != path:
                st.warning(f"The environment variable {settings.ENV_VARS['brand_kit']} names another brand kit, "
                           "and it wins over the settings file.")
