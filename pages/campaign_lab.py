"""Campaign Lab page: simulated users see ad variants and click or not; A/B split or Thompson bandit."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import access
import selection
import services
from limits import IMPRESSIONS, SEED
from rewards.variant_file import VariantFileError
from store.csv_import import ImportFailed

access.require_login()  # nothing below runs for a visitor who has not signed in

st.title("Campaign Lab")
st.caption("Simulated users are real users of the dataset; their clicks come from the simulated audience "
           "(collaborative filtering on real ratings × creative response). See the README for its assumptions.")

datasets = services.audience.datasets()["dataset"].tolist()
selection.preselect("campaign_dataset", "dataset", datasets, datasets[0])
top = st.columns([2, 3])
dataset = top[0].selectbox("Dataset", datasets, key="campaign_dataset")
selection.keep("dataset", dataset)
catalog = services.common.catalog(dataset)
items = selection.item_labels(catalog)
selection.preselect("campaign_item", "item", list(items), services.audience.default_item(dataset))
item_id = top[1].selectbox("Item to promote", list(items), format_func=items.get, key="campaign_item")
selection.keep("item", item_id)

st.subheader("Variants")
uploaded = st.file_uploader("Load variants from a CSV (title, body, cta) or JSON file", type=["csv", "json"],
                            key="variants_file")
if uploaded is not None:
    try:
        st.session_state["variants"] = services.campaigns.parse_variants(uploaded.getvalue(), uploaded.name)
    except VariantFileError as exc:
        st.error(str(exc))
if st.session_state.get("variants_item") != item_id and uploaded is None:
    st.session_state["variants"] = services.campaigns.example_variants(dataset, item_id)
    st.session_state["variants_item"] = item_id
edited = st.data_editor(pd.DataFrame(st.session_state["variants"], columns=["title", "body", "cta"]),
                        num_rows="dynamic", width="stretch", key="variants_editor")

st.subheader("Traffic")
cols = st.columns(4)
kinds = services.audience.segment_kinds()
kind = cols[0].selectbox("Segment", list(kinds), format_func=kinds.get, key="segment_kind")
options = services.audience.segment_values(dataset, kind)
value = cols[1].selectbox("Group", options, key="segment_value", disabled=kind == "all")
impressions = cols[2].number_input("Impressions", *IMPRESSIONS.bounds(), value=20_000, step=1000,
                                   key="impressions")
allocation = cols[3].radio("Allocation", ["thompson", "ab"], key="allocation", horizontal=True,
                           format_func={"thompson": "Thompson bandit", "ab": "A/B split"}.get)
compare = st.checkbox("Also run the other allocation on the same traffic (regret comparison)", value=True,
                      key="compare")
seed = st.number_input("Seed", *SEED.bounds(), value=0, key="seed")

if st.button("Run campaign", type="primary", key="run_campaign"):
    try:
        variants = services.campaigns.validate_variants(edited.to_dict("records"))
        bar = st.progress(0.0, text="Scoring variants for every simulated user")
        runs = services.campaigns.run_campaigns(
            dataset, item_id, variants, kind, None if kind == "all" else value, int(impressions), allocation,
            compare, int(seed), progress=lambda f, m: bar.progress(min(f, 1.0), text=m))
        st.session_state["campaign"] = {"runs": runs, "variants": variants, "primary": allocation}
    except (ValueError, VariantFileError) as exc:
        st.error(str(exc))


COLUMNS = {"variant": "Variant", "impressions": "Impressions", "clicks": "Clicks", "ctr": "CTR",
           "ci_low": "CTR, 95% low", "ci_high": "CTR, 95% high", "expected_ctr": "Expected CTR (simulator)",
           "p_best": "Chance of being best", "expected_lift": "Expected lift over the best other"}
AXES = {"batch": "Batch of impressions", "cumulative_clicks": "Clicks so far", "share": "Share of the batch",
        "cumulative_regret": "Expected clicks lost", "allocation": "Allocation", "variant": "Variant",
        "segment": "Segment", "ctr": "CTR"}
ALLOCATION_NAMES = {"thompson": "Thompson bandit", "ab": "A/B split"}
CONCLUSIVE = 0.95  # posterior probability of being best at which the page calls a winner


def winner_sentence(table: pd.DataFrame) -> str:
    """Which variant wins, how surely (posterior probability of the highest CTR), and by how much (expected lift
    over the best of the others), in one sentence; a probability under `CONCLUSIVE` is said to be no verdict yet."""
    top = table.sort_values("p_best", ascending=False).iloc[0]
    verdict = "wins" if top["p_best"] >= CONCLUSIVE else "leads, but the test is not conclusive yet"
    return (f"**{top['variant']}** {verdict}: a {top['p_best']:.0%} probability of having the highest CTR, and an "
            f"expected lift of {top['expected_lift']:+.0%} over the best of the others (CTR {top['ctr']:.2%}).")


def ctr_bars(labels: pd.Series, ctr: pd.Series, low: pd.Series, high: pd.Series, title: str) -> go.Figure:
    """CTR per variant with its interval as asymmetric error bars."""
    bars = go.Figure(go.Bar(x=labels, y=ctr, error_y={"type": "data", "symmetric": False, "array": high - ctr,
                                                      "arrayminus": ctr - low}))
    bars.update_layout(title=title, yaxis_tickformat=".1%", yaxis_title="CTR")
    return bars


state = st.session_state.get("campaign")
if state:
    primary = state["runs"][state["primary"]]
    labels = {i: f"V{i + 1}: {v['title'][:40]}" for i, v in enumerate(state["variants"])}
    table = primary["variants"].assign(variant=lambda f: f["variant"].map(labels))
    st.subheader(f"Results · {primary['allocation']} · {primary['users']} simulated users")
    (st.success if table["p_best"].max() >= CONCLUSIVE else st.info)(winner_sentence(table))
    m = st.columns(4)
    m[0].metric("Impressions", f"{int(table['impressions'].sum()):,}")
    m[1].metric("Clicks", f"{int(table['clicks'].sum()):,}")
    m[2].metric("Overall CTR", f"{table['clicks'].sum() / max(table['impressions'].sum(), 1):.2%}")
    m[3].metric("Regret (expected clicks lost)", f"{primary['regret']:.1f}",
                help="Clicks the campaign is expected to have lost against always showing the best variant")
    percent = ["ctr", "ci_low", "ci_high", "expected_ctr", "p_best"]
    st.dataframe(table.rename(columns=COLUMNS).style.format(
        {COLUMNS[c]: "{:.2%}" for c in percent} | {COLUMNS["expected_lift"]: "{:+.1%}"}), hide_index=True,
        width="stretch")
    st.plotly_chart(ctr_bars(table["variant"], table["ctr"], table["ci_low"], table["ci_high"],
                             "CTR per variant with 95% Wilson intervals"), width="stretch")

    if len(state["runs"]) > 1:
        st.subheader("Both allocations on the same traffic")
        arms = st.columns(len(state["runs"]))
        for column, (name, run) in zip(arms, state["runs"].items(), strict=True):
            per = run["variants"]
            column.markdown(f"**{ALLOCATION_NAMES[name]}**" + (" (logged)" if name == state["primary"] else
                                                                 " (counterfactual, not logged)"))
            column.metric("Clicks", f"{int(per['clicks'].sum()):,}")
            column.metric("Regret (expected clicks lost)", f"{run['regret']:.1f}")
            column.dataframe(per.assign(variant=per["variant"].map(labels))[["variant", "impressions", "ctr"]]
                             .rename(columns=COLUMNS).style.format({"CTR": "{:.2%}"}), hide_index=True,
                             width="stretch")

    timeline = primary["timeline"].assign(variant=lambda f: f["variant"].map(labels))
    left, right = st.columns(2)
    left.plotly_chart(px.line(timeline, x="batch", y="cumulative_clicks", color="variant", labels=AXES,
                              title="Cumulative clicks"), width="stretch")
    right.plotly_chart(px.area(timeline, x="batch", y="share", color="variant", labels=AXES,
                               title="Allocation over time (share of each batch)"), width="stretch")
    regret = pd.concat([run["timeline"].groupby("batch")["cumulative_regret"].first().reset_index()
                        .assign(allocation=ALLOCATION_NAMES[name]) for name, run in state["runs"].items()])
    st.plotly_chart(px.line(regret, x="batch", y="cumulative_regret", color="allocation", labels=AXES,
                            title="Cumulative regret (expected clicks lost vs the best variant)"), width="stretch")

    breakdown_kind = st.selectbox("Break down by", [k for k in kinds if k != "all"], format_func=kinds.get,
                                  key="breakdown")
    breakdown = primary["segments"][breakdown_kind].assign(variant=lambda f: f["variant"].map(labels))
    by_segment = px.bar(breakdown, x="segment", y="ctr", color="variant", barmode="group", labels=AXES | COLUMNS,
                        hover_data=["impressions", "clicks", "ci_low", "ci_high"],
                        title=f"CTR by {kinds[breakdown_kind].lower()}")
    st.plotly_chart(by_segment.update_yaxes(tickformat=".1%"), width="stretch")
    d = st.columns(2)
    d[0].download_button("Download results (CSV)", services.common.csv_export(table), "campaign_results.csv",
                         "text/csv", key="download_results")
    d[1].download_button("Download impressions (CSV)", services.common.csv_export(primary["impressions"]),
                         "campaign_impressions.csv", "text/csv", key="download_impressions")

st.divider()
st.subheader("Real feedback")
st.caption("Impressions and clicks that really happened: decided by the serving API (`make serve`) or imported "
           "from a campaign's log. They become preference pairs for a DPO run *from logged feedback* on the "
           "Reward Tuning page.")
with st.expander("Import a campaign log (CSV)"), st.form("import_log"):
    log_file = st.file_uploader("Columns: impression_id, user_id, item_id, variant ('title | body | cta'), "
                                "clicked (1/0), timestamp (Unix or ISO), optional converted", type=["csv"],
                                key="log_upload")
    campaign_name = st.text_input("Campaign name", placeholder="spring-launch", key="log_campaign")
    if st.form_submit_button("Import log"):
        if log_file is None or not campaign_name:
            st.error("Choose a CSV file and name the campaign")
        else:
            try:
                counts = services.campaigns.import_log(dataset, campaign_name, log_file.getvalue(),
                                                       log_file.name)
                st.success(f"Imported '{campaign_name}': {counts['impressions']:,} impressions, "
                           f"{counts['clicks']:,} clicks, {counts['conversions']:,} conversions")
            except ImportFailed as exc:
                st.error(f"Nothing was imported: {len(exc.problems)} problem(s).")
                st.code(str(exc), language=None)
sources = services.campaigns.logged_sources(dataset)
if not sources:
    st.info("No real impressions in this dataset yet: serve decisions through the API or import a log above.")
else:
    pick = st.columns([2, 1])
    source = pick[0].selectbox("Source", sources, key="log_source",
                               format_func=lambda s: "Serving API" if s == "api" else f"Imported: {s[7:]}")
    only_item = pick[1].checkbox("Only the item above", value=True, key="log_only_item")
    logged = services.serving.report(dataset, item_id if only_item else None, source)
    if logged.empty:
        st.info("Nothing logged for this item from this source.")
    else:
        titles = catalog["title"].to_dict()
        logged = logged.assign(item=logged["item_id"].map(titles),
                               variant=[f"{t[:40]} ({titles.get(i, i)[:20]})" if not only_item else t[:50]
                                        for t, i in zip(logged["title"], logged["item_id"], strict=True)])
        m = st.columns(3)
        m[0].metric("Impressions", f"{int(logged['impressions'].sum()):,}")
        m[1].metric("Clicks", f"{int(logged['clicks'].sum()):,}")
        m[2].metric("Overall CTR", f"{logged['clicks'].sum() / max(logged['impressions'].sum(), 1):.2%}")
        shown = logged[["item", "title", "body", "cta", "impressions", "clicks", "conversions", "ctr", "ctr_low",
                        "ctr_high"]]
        st.dataframe(shown.style.format({"ctr": "{:.2%}", "ctr_low": "{:.2%}", "ctr_high": "{:.2%}"}),
                     hide_index=True, width="stretch")
        st.plotly_chart(ctr_bars(logged["variant"], logged["ctr"], logged["ctr_low"], logged["ctr_high"],
                                 "Logged CTR per variant with 95% Wilson intervals"), width="stretch")
        st.download_button("Download the logged impressions (CSV)",
                           services.common.csv_export(services.serving.impressions(dataset, source)),
                           "logged_impressions.csv", "text/csv", key="download_logged")
