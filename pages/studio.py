"""Studio page: personalized ad variants (copy + banners) for a user or a segment, scored, kept, exported."""

import math

import pandas as pd
import streamlit as st

import access
import selection
import services
from generation.compose import SIZES
from generation.copy import LIMITS
from generation.models import ModelUnavailable
from generation.writer import DEFAULT_CANDIDATES
from limits import CANDIDATES, SEED, SEGMENT_USERS, VARIANTS_PER_USER

access.require_login()  # nothing below runs for a visitor who has not signed in

SIZE_NAMES = [f"{w}x{h}" for w, h in SIZES]
MAX_CARDS = 12

st.title("Studio")
datasets = services.audience.datasets()["dataset"].tolist()
selection.preselect("studio_dataset", "dataset", datasets, datasets[0])
top = st.columns([2, 3])
dataset = top[0].selectbox("Dataset", datasets, key="studio_dataset")
selection.keep("dataset", dataset)
items = selection.item_labels(services.common.catalog(dataset))
selection.preselect("studio_item", "item", list(items), services.audience.default_item(dataset))
item_id = top[1].selectbox("Item to promote", list(items), format_func=items.get, key="studio_item")
selection.keep("item", item_id)

mode = st.radio("Write for", ["One user", "A segment"], horizontal=True, key="studio_mode")
user_id, segment, max_users, engine = None, None, 1, "local"
if mode == "One user":
    labels = selection.user_labels(services.audience.users(dataset))
    selection.preselect("studio_user", "user", list(labels))
    user_id = st.selectbox("User", list(labels), key="studio_user", format_func=labels.get)
    selection.keep("user", user_id)
else:
    kinds = services.audience.segment_kinds()
    cols = st.columns(3)
    kind = cols[0].selectbox("Segment", list(kinds), format_func=kinds.get, key="studio_segment_kind")
    value = cols[1].selectbox("Group", services.audience.segment_values(dataset, kind), key="studio_segment_value",
                              disabled=kind == "all")
    max_users = cols[2].number_input("Users from the segment", *SEGMENT_USERS.bounds(), 8, key="studio_max_users")
    segment = (kind, None if kind == "all" else value)
    engine = st.radio("Run on", services.segment_job.ENGINES, horizontal=True, key="studio_engine",
                      help="local: one request in this server. ray: a segment job in batches on Ray actors (a "
                           "cluster when RAY_ADDRESS is set); stored batch by batch, and a rerun resumes.")

cols = st.columns(4)
n = cols[0].slider("Variants per user", *VARIANTS_PER_USER.bounds(), 4, key="studio_n")
candidates = cols[3].number_input(
    "Candidates per variant", *CANDIDATES.bounds(), DEFAULT_CANDIDATES, key="studio_candidates",
    help="Samples drawn for each variant; every one is checked, and the one the simulated audience rates best "
         "is kept. More candidates: better and more often accepted copy, slower.")
renderer = cols[1].text_input("Banner renderer", value=services.settings.environment()["settings"]["image_model"],
                              help="'procedural' (offline) or a diffusers model id / local folder",
                              key="studio_renderer")
seed = cols[2].number_input("Seed", *SEED.bounds(), 0, key="studio_seed")

if st.button("Generate variants", type="primary", key="generate"):
    bar = st.progress(0.0, text="Starting")
    try:
        st.session_state["studio_variants"] = services.segment_job.generate(
            dataset, item_id, user_id, segment, int(n), int(seed), renderer.strip() or None, int(max_users),
            int(candidates), engine, progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
    except (LookupError, ModelUnavailable, ValueError) as exc:
        st.error(str(exc))


def edit_form(variant: dict) -> None:
    """Edit a card's copy by hand: the edit is checked, drawn and scored at once and shown as a new card beside
    the original, which stays as the model wrote it."""
    with st.expander("Edit"), st.form(f"edit_{variant['id']}"):
        title = st.text_input("Title", variant["title"], max_chars=LIMITS["title"], key=f"edit_title_{variant['id']}")
        body = st.text_area("Body", variant["body"], max_chars=LIMITS["body"], key=f"edit_body_{variant['id']}")
        cta = st.text_input("Call to action", variant["cta"], max_chars=LIMITS["cta"],
                            key=f"edit_cta_{variant['id']}")
        if st.form_submit_button("Check and save the edit", key=f"save_edit_{variant['id']}"):
            try:
                edited = services.studio.edit_variant(variant["id"], title, body, cta, renderer.strip() or None)
            except (LookupError, ValueError) as exc:
                st.error(str(exc))
                return
            shown = st.session_state["studio_variants"]
            shown.insert(next(k for k, v in enumerate(shown) if v["id"] == variant["id"]) + 1, edited)
            st.rerun()


def rewrite(variant: dict, keep: list[str]) -> None:
    """Replace a card by a variant written again for its user and angle (another seed, same checks), keeping
    the fields in `keep` word for word."""
    again = (int(seed) + 7919 * int(variant["id"])) % (SEED.bounds()[1] + 1)
    try:
        with st.spinner("Writing the card again…"):
            fresh = services.studio.rewrite_variant(variant["id"], again, renderer.strip() or None, int(candidates),
                                                    keep=tuple(keep))
    except (LookupError, ModelUnavailable, ValueError) as exc:
        st.error(str(exc))
        return
    shown = st.session_state["studio_variants"]
    shown[next(k for k, v in enumerate(shown) if v["id"] == variant["id"])] = fresh
    st.rerun()


def gallery(variant: dict) -> None:
    """Every size of a variant's banner at once, each at its own width (up to the card's), largest first."""
    by_area = sorted(variant["banners"].items(), key=lambda kv: -math.prod(map(int, kv[0].split("x"))))
    for name, path in by_area:
        st.image(path, caption=name)  # its natural width, never wider than the card


variants = st.session_state.get("studio_variants") or []
if variants:
    accepted = [v for v in variants if v["safety"]["status"] == "passed"]
    st.subheader(f"{len(accepted)} variants ready, {len(variants) - len(accepted)} rejected")
    drawn = sum(v.get("candidates") or 1 for v in variants)
    st.caption(f"{drawn} candidates drawn for {len(variants)} variants: each variant is, of the candidates that "
               "passed every check, the one the simulated audience is likeliest to click. Names, numbers, claims "
               "and quotes must be supported by the catalog or the brand kit.")
    if len({v["user_id"] for v in variants}) > 1:
        table = pd.DataFrame(variants)[["user_id", "title", "body", "cta", "score", "angle"]]
        st.dataframe(table.assign(status=[v["safety"]["status"] for v in variants]), hide_index=True,
                     width="stretch")
    size = st.radio("Banner size", SIZE_NAMES, horizontal=True, key="studio_size")
    kept = set(st.session_state.get("studio_kept", set()))
    columns = st.columns(2)
    for index, variant in enumerate(variants[:MAX_CARDS]):
        with columns[index % 2].container(border=True):
            if variant["banners"]:
                design = (variant.get("brief") or {}).get("design")
                st.image(variant["banners"][size],  # the export names its files variant-<id>-<size>.png
                         caption=f"{size} · variant {variant['id']} · user {variant['user_id']}"
                                 + (f" · {design} design" if design else ""))
                with st.expander(f"All {len(variant['banners'])} sizes"):
                    gallery(variant)
            st.markdown(f"**{variant['title']}**  \n{variant['body']}  \n`{variant['cta']}`")
            if variant["safety"]["status"] == "passed":
                st.metric("Predicted CTR", f"{variant['score']:.2%}",
                          help=f"Best of {variant.get('candidates') or 1} candidates")
                st.caption("Targets: " + ", ".join(variant["targets"]))
                if st.checkbox("Keep", value=variant["id"] in kept, key=f"keep_{variant['id']}"):
                    kept.add(variant["id"])
                else:
                    kept.discard(variant["id"])
            else:
                st.error("Rejected: " + "; ".join(variant["safety"]["reasons"]))
            if hook := variant.get("hook"):
                st.caption(f"Hook: {hook['name']}, which user {variant['user_id']} rated {hook['rating']:g} "
                           f"(their mean {hook['user_mean']:g})", help="One of the user's own liked items, the "
                           "most related to this item; code writes its name, so it is true for this user")
            if variant.get("edited_from"):
                st.caption(f"Edited by hand from variant {variant['edited_from']}")
            edit_form(variant)
            if variant["user_id"]:
                keep = st.multiselect("Keep when writing again", ["title", "body", "cta"], key=f"lock_{variant['id']}",
                                      format_func={"title": "Title", "body": "Body", "cta": "Call to action"}.get,
                                      help="Locked fields stay word for word; the model writes the rest (a body "
                                           "that follows a kept title), and the whole card is checked again")
                if st.button("Write this card again", key=f"rewrite_{variant['id']}", disabled=len(keep) == 3,
                             help="A new variant for the same user and angle, in this card's place; the old one "
                                  "stays in the store"):
                    rewrite(variant, keep)
            with st.expander("Provenance"):
                st.json({k: variant.get(k) for k in ("id", "model", "adapter", "seed", "profile_version", "angle",
                                                     "hook", "candidates")})
    st.session_state["studio_kept"] = kept
    chosen = sorted(kept) or [v["id"] for v in accepted]
    if chosen:
        shown = {v["id"] for v in variants[:MAX_CARDS] if v["safety"]["status"] == "passed"}
        services.studio.keep_variants(sorted(kept))
        services.studio.keep_variants(sorted(shown - kept), kept=False)  # unticking discards in the store too
        which = "kept" if kept else "all accepted"
        actions = st.columns(2)
        actions[0].download_button(f"Export {which} variants (ZIP)", services.studio.export_variants(chosen),
                                   "adloop_variants.zip", "application/zip", key="export_zip")
        if actions[1].button(f"Send {which} variants to Campaign Lab", key="send_to_lab"):
            picked = set(chosen)  # the Lab tests them on its simulated traffic, for the same dataset and item
            st.session_state["variants"] = [{k: v[k] for k in ("title", "body", "cta")} for v in variants
                                            if v["id"] in picked]
            st.session_state["variants_item"] = item_id
            st.switch_page("pages/campaign_lab.py")
