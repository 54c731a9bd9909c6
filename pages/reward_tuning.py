"""Reward Tuning page: launch TRL runs, watch them live, judge them on held-out users, promote an adapter."""

from datetime import datetime

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import services

CURVES = ["reward", "loss", "kl", "rewards/margins", "learning_rate"]

st.title("Reward Tuning")
st.caption("TRL refines the copy writer with LoRA adapters from simulated clicks (train audience); runs are judged "
           "on held-out users by the judge audience they never trained on. TRL no longer ships a PPO trainer: "
           "GRPO and RLOO optimise the same clipped objective with a group baseline instead of a value model.")

env = services.environment()
active = env["settings"].get("text_adapter") or ""
cols = st.columns([4, 1])
cols[0].info(f"Studio generates with: **{env['settings']['text_model']}**"
             + (f" + adapter `{active}`" if active else " (base model, no adapter)"))
if active and cols[1].button("Roll back to base", key="rollback"):
    services.rollback_adapter()
    st.rerun()

with st.form("launch"):
    st.subheader("New run")
    c = st.columns(4)
    method = c[0].selectbox("Method", ["grpo", "rloo", "dpo"], key="method",
                            format_func={"grpo": "GRPO (online)", "rloo": "RLOO (online)", "dpo": "DPO (offline)"}.get)
    defaults = services.tuning_defaults(method)
    steps = c[1].number_input("Steps", 1, 2000, 20, key="steps")
    learning_rate = c[2].number_input("Learning rate", 1e-6, 1e-2, 2e-4, format="%.6f", key="lr")
    lora_r = c[3].number_input("LoRA rank", 1, 256, defaults["lora_r"], key="lora_r")
    c = st.columns(4)
    beta = c[0].number_input("KL coefficient (beta)", 0.0, 10.0, float(defaults["beta"]), format="%.3f", key="beta")
    prompts_per_step = c[1].number_input("Prompts per step (batch)", 1, 64, defaults["prompts_per_step"],
                                         key="batch")
    generations = c[2].number_input("Generations per prompt", 2, 16, defaults["num_generations"], key="generations")
    users = c[3].number_input("Training users", 1, 943, defaults["users"], key="users")
    completion = st.number_input("Max completion tokens", 8, 256, defaults["max_completion_length"], key="tokens")
    if st.form_submit_button("Launch run", type="primary"):
        config = {"method": method, "max_steps": int(steps), "learning_rate": float(learning_rate),
                  "lora_r": int(lora_r), "lora_alpha": 2 * int(lora_r), "beta": float(beta),
                  "prompts_per_step": int(prompts_per_step), "num_generations": int(generations),
                  "users": int(users), "max_completion_length": int(completion),
                  "save_steps": max(1, min(10, int(steps)))}
        try:
            st.session_state["selected_run"] = services.launch_run(config)
            st.success(f"Launched run {st.session_state['selected_run']}")
        except ValueError as exc:
            st.error(str(exc))

runs = services.runs_table()
if runs.empty:
    st.write("No runs yet.")
    st.stop()

st.subheader("Runs")
st.dataframe(runs.drop(columns=["adapter_path"]), hide_index=True, width="stretch")
ids = runs["id"].tolist()
if st.session_state.get("selected_run") not in ids:
    st.session_state["selected_run"] = ids[0]
run_id = st.selectbox("Run", ids, key="selected_run")


def eta(run: dict) -> str:
    if not run.get("started_at") or not run["global_step"]:
        return "estimating…"
    started = pd.Timestamp(run["started_at"]).to_pydatetime()
    per_step = (datetime.utcnow() - started).total_seconds() / run["global_step"]
    return f"{per_step * max(run['max_steps'] - run['global_step'], 0):.0f} s left"


def curves(frame: pd.DataFrame, colour: str | None = None) -> None:
    shown = [c for c in CURVES if c in frame.columns and frame[c].notna().any()]
    if not shown:
        st.write("No metrics logged yet.")
        return
    for name in shown:
        chart = px.line(frame, x="step", y=name, color=colour, markers=True, title=name)
        chart.update_layout(height=260, margin={"t": 40, "b": 10})
        st.plotly_chart(chart, width="stretch", key=f"{name}-{colour}")


@st.fragment(run_every=2)
def live(run_id: str) -> None:
    """Redrawn every 2 s: status, progress and curves of the selected run."""
    run = services.run_details(run_id)
    state = run["status"]
    seen = st.session_state.setdefault("seen_status", {})
    if seen.get(run_id) in ("queued", "running") and state not in ("queued", "running"):
        seen[run_id] = state
        st.rerun(scope="app")  # the run ended: refresh evaluation, promotion and the run table too
    seen[run_id] = state
    st.progress(min(run["global_step"] / max(run["max_steps"], 1), 1.0),
                text=f"{state} · step {run['global_step']} of {run['max_steps']}"
                + (f" · {eta(run)}" if state == "running" else ""))
    if run.get("error"):
        st.error(run["error"][-1500:])
    buttons = st.columns(3)
    if state in ("queued", "running") and buttons[0].button("Cancel", key="cancel"):
        services.cancel_run(run_id)
    if state in ("failed", "cancelled") and run.get("checkpoint") and buttons[1].button("Resume", key="resume"):
        services.resume_run(run_id)
    curves(services.run_metrics(run_id))


live(run_id)
run = services.run_details(run_id)

st.subheader("Evaluation on held-out users (judge audience)")
if run.get("adapter_path"):
    c = st.columns(3)
    if c[0].button("Evaluate", key="evaluate"):
        with st.spinner("Sampling base, best-of-4 and tuned copy for held-out users…"):
            try:
                services.evaluate_run(run_id)
            except ValueError as exc:
                st.error(str(exc))
        run = services.run_details(run_id)
    if c[1].button("Promote to Studio", key="promote"):
        st.success(f"The Studio now generates with {services.promote_run(run_id)}")
evaluation = run.get("evaluation")
if evaluation:
    settings_ = evaluation["settings"]
    ctr = {name: s["judge_ctr"] for name, s in settings_.items()}
    bars = go.Figure(go.Bar(
        x=list(ctr), y=[c["mean"] for c in ctr.values()],
        error_y={"type": "data", "symmetric": False,
                 "array": [(c["ci_high"] or c["mean"]) - c["mean"] for c in ctr.values()],
                 "arrayminus": [c["mean"] - (c["ci_low"] or c["mean"]) for c in ctr.values()]}))
    bars.update_layout(title=f"Judge CTR with 95% intervals ({evaluation['users']} held-out users)",
                       yaxis_tickformat=".2%")
    st.plotly_chart(bars, width="stretch")
    table = pd.DataFrame({name: {k: v for k, v in s.items() if k != "judge_ctr"} for name, s in settings_.items()})
    st.dataframe(table, width="stretch")
    st.caption(f"KL to the base model: {evaluation['kl_to_base']}")
    st.write("Sample copy for the same prompts (look for reward hacking):")
    st.dataframe(pd.DataFrame(evaluation["samples"]), hide_index=True, width="stretch")
elif run.get("adapter_path"):
    st.write("Not evaluated yet.")

st.subheader("Compare runs")
chosen = st.multiselect("Runs", ids, default=ids[: min(3, len(ids))], key="compare_runs")
if chosen:
    frames = [services.run_metrics(r) for r in chosen]
    frames = [f for f in frames if not f.empty]
    if frames:
        curves(pd.concat(frames, ignore_index=True), colour="run")
