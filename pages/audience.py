"""Audience page: pick a user, see their history, and read the inferred profile with its evidence."""

from datetime import UTC, datetime

import pandas as pd
import plotly.express as px
import streamlit as st

import access
import selection
import services
from generation.models import ModelUnavailable
from store.csv_import import ImportFailed

access.require_login()  # nothing below runs for a visitor who has not signed in


def evidence_table(evidence: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{"item": e["item_id"], "title": e["title"], "rating": e["rating"],
                          "date": datetime.fromtimestamp(e["timestamp"], UTC).date()} for e in evidence])


def show_profile(profile: dict) -> None:
    intent = profile["intent"]
    source = (f"written by {profile['model']}" if profile["intent_source"] == "llm"
              else "built from the structured signals" + (f" (LLM answer rejected: {intent['rejected']})"
                                                           if intent.get("rejected") else ""))
    st.subheader("Current intent")
    st.info(f"**{intent['summary']}**\n\n_{source}_")
    cols = st.columns(3)
    cols[0].metric("Trend", intent["state"], help="Exploring when recent picks drift from the long-term taste")
    cols[1].metric("Drift", f"{intent['drift']:.2f}", help="1 − cosine similarity of recent and long-term items")
    cols[2].metric("Profile computed in", f"{profile.get('seconds', 0):.1f} s")
    for focus in intent["focus"]:
        lift = "new" if focus["lift"] >= 99 else f"×{focus['lift']:.1f}"
        with st.expander(f"Growing: {focus['label']} — {focus['weight']:.0%} of recent picks ({lift})"):
            st.dataframe(evidence_table(focus["evidence"]), hide_index=True, width="stretch")
    with st.expander("Recent window (the items behind the intent)"):
        st.dataframe(evidence_table(intent["recent"]), hide_index=True, width="stretch")

    left, right = st.columns(2)
    with left:
        st.subheader("Lasting interests")
        if profile["interests"]:
            frame = pd.DataFrame(profile["interests"])
            chart = px.bar(frame, x="weight", y="label", orientation="h", hover_data=["lift"],
                           labels={"weight": "rating- and recency-weighted share", "label": ""})
            chart.update_layout(yaxis={"autorange": "reversed"}, height=280, margin={"t": 10, "b": 10})
            st.plotly_chart(chart, width="stretch")
        for interest in profile["interests"]:
            with st.expander(f"{interest['label']} · {interest['weight']:.0%} · ×{interest['lift']:.1f} vs catalog"):
                st.dataframe(evidence_table(interest["evidence"]), hide_index=True, width="stretch")
    with right:
        st.subheader("Taste themes")
        for theme in profile["themes"]:
            with st.expander(f"{theme['label']} · {theme['weight']:.0%}", expanded=True):
                st.dataframe(evidence_table(theme["evidence"]), hide_index=True, width="stretch")


def show_taste(profile: dict, dataset: str, user_id: str) -> None:
    """What the interaction data say: taste neighbours, likely next items, and hooks for an item to promote."""
    left, right = st.columns(2)
    with left:
        st.subheader("Taste neighbours")
        st.caption("Users whose histories are most like this one's (cosine of their interactions), with the shared "
                   "items this user rated highest.")
        for n in profile.get("neighbours", []):
            with st.expander(f"User {n['user_id']} · similarity {n['similarity']:.2f} · {n['shared']} items shared"):
                st.dataframe(evidence_table(n["evidence"]), hide_index=True, width="stretch")
    with right:
        st.subheader("Likely to love next")
        pool = profile.get("neighbour_pool", 0)
        st.caption(f"Collaborative filtering, the items near their latest picks and their content profile, "
                   f"combined; with how many of their {pool} nearest neighbours liked each.")
        for pick in profile.get("picks", []):
            with st.expander(f"{pick['title']} · liked by {pick['neighbours_liked']} of {pool} neighbours"):
                st.write(", ".join(pick["categories"]) or "No categories")
                if pick["because"]:
                    st.caption("Most like these items they liked:")
                    st.dataframe(evidence_table(pick["because"]), hide_index=True, width="stretch")
    st.subheader("Hooks for an item to promote")
    items = selection.item_labels(services.common.catalog(dataset))
    selection.preselect("hook_item", "item", list(items), services.audience.default_item(dataset))
    item_id = st.selectbox("Item to promote", list(items), format_func=items.get, key="hook_item")
    selection.keep("item", item_id)
    found = services.audience.hooks(dataset, user_id, item_id)
    if not found:
        st.write("None: no item this user rated at or above their mean is related enough to this one. The Studio "
                 "then sells it through their interests only.")
        return
    st.caption("Items this user rated at or above their own mean rating, most related to the item (people who "
               "chose both, and similar content). A Studio headline may name them: \"for fans of …\".")
    st.dataframe(pd.DataFrame([{"hook": h["name"], "their rating": h["rating"], "their mean": h["user_mean"],
                                "relatedness (0-1)": h["relatedness"], "people who chose both": h["shared_fans"]}
                               for h in found]), hide_index=True, width="stretch")


def import_form() -> None:
    with st.expander("Import your own data (CSV)"):
        st.caption("Items: item_id, title, optional description, category (use | between several), year. "
                   "Interactions: user_id, item_id, timestamp (Unix seconds or ISO date), optional rating.")
        with st.form("import", clear_on_submit=False):
            name = st.text_input("Dataset name", value="my-data")
            items_file = st.file_uploader("Items CSV", type=["csv"])
            interactions_file = st.file_uploader("Interactions CSV", type=["csv"])
            replace = st.checkbox("Replace a dataset of the same name")
            if st.form_submit_button("Import"):
                if not (items_file and interactions_file):
                    st.error("Choose both files first.")
                    return
                try:
                    counts = services.audience.import_csv(name, items_file.getvalue(), interactions_file.getvalue(),
                                                 items_file.name, interactions_file.name, replace)
                except ImportFailed as exc:
                    st.error(f"Nothing was imported: {len(exc.problems)} problem(s) shown.")
                    st.code("\n".join(str(p) for p in exc.problems), language=None)
                    return
                st.success(services.audience.import_message(name, counts))
                st.session_state["dataset"] = name
                selection.keep("dataset", name)


st.title("Audience")
with st.spinner("Loading the demo dataset (first start only)…"):
    summary = services.audience.datasets()
names = summary["dataset"].tolist()
selection.preselect("dataset", "dataset", names, names[0])
top = st.columns([2, 3])
dataset = top[0].selectbox("Dataset", names, key="dataset")
selection.keep("dataset", dataset)
query = top[1].text_input("Find users", placeholder="user id, occupation or gender (M/F)", key="user_query")
import_form()

people = services.audience.users(dataset, query)
if people.empty:
    st.warning(f"No user matches '{query}'.")
    st.stop()


labels = selection.user_labels(people)
selection.preselect("user_id", "user", list(labels))
user_id = st.selectbox(f"User ({len(people)} found)", list(labels), format_func=labels.get, key="user_id")
selection.keep("user", user_id)
history = services.audience.history(dataset, user_id)
cols = st.columns(4)
cols[0].metric("Interactions", len(history))
cols[1].metric("Mean rating", f"{history['rating'].mean():.2f}" if history["rating"].notna().any() else "—")
cols[2].metric("First", f"{history['date'].min():%Y-%m-%d}")
cols[3].metric("Latest", f"{history['date'].max():%Y-%m-%d}")

profile_tab, taste_tab, history_tab, activity_tab = st.tabs(["Profile", "Taste", "History", "Activity"])
with profile_tab:
    profile = services.audience.cached_profile(dataset, user_id)
    label = "Recompute profile" if profile else "Compute profile"
    if st.button(label, type="primary", key="compute"):
        bar = st.progress(0.0, text="Starting")
        try:
            with st.status("Inferring the profile…", expanded=False) as status:
                profile = services.audience.profile(dataset, user_id, recompute=True,
                                           progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
                status.update(label=f"Profile ready in {profile['seconds']:.1f} s", state="complete")
        except (ModelUnavailable, ValueError) as exc:
            st.error(str(exc))
    if profile:
        show_profile(profile)
    else:
        st.write("No profile yet for this user. Compute one to see interests, themes and intent.")

with taste_tab:
    if profile:
        show_taste(profile, dataset, user_id)
    else:
        st.write("Compute the profile (Profile tab) to see this user's taste neighbours, likely next items and hooks.")

with history_tab:
    table = history.sort_values("timestamp", ascending=False)[["date", "item_id", "title", "category", "rating"]]
    st.dataframe(table, hide_index=True, width="stretch")

with activity_tab:
    mix = services.audience.category_mix(history)
    if not mix.empty:
        chart = px.bar(mix, x="category", y="interactions", color="mean_rating", color_continuous_scale="Viridis",
                       title="Category mix", labels={"mean_rating": "mean rating"})
        st.plotly_chart(chart, width="stretch")
    timeline = services.audience.activity(history)
    chart = px.bar(timeline, x="period", y="interactions", color="mean_rating", color_continuous_scale="Viridis",
                   title="Activity per week", labels={"period": "week", "mean_rating": "mean rating"})
    st.plotly_chart(chart, width="stretch")
