"""Reward Tuning page: launch TRL runs, watch them live, judge them on held-out users, promote an adapter."""

import math
from datetime import datetime

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import access
import services
from limits import BEST_OF, BETA, DRAWS, HELD_OUT_USERS, TUNING

access.require_login()  # nothing below runs for a visitor who has not signed in

CURVES = ["reward", "judge_ctr", "sft_loss", "sft_mean_token_accuracy", "loss", "kl", "rewards/margins",
          "implicit_accuracy", "completions/clipped_ratio", "learning_rate"]
TITLES = {"reward": "train reward (click probability, Studio-gated)", "judge_ctr": "judge CTR, held-out users",
          "sft_loss": "stage 1: SFT loss on the best accepted of N samples",
          "sft_mean_token_accuracy": "stage 1: SFT token accuracy", "loss": "loss (for the recipe: stage 2, DPO)",
          "kl": "KL to the base model (nats per token, TRL's estimate)",
          "completions/clipped_ratio": "share of completions cut at the token cap",
          "learning_rate": "learning rate (log scale)"}
PERCENT = {"reward", "judge_ctr", "completions/clipped_ratio", "sft_mean_token_accuracy", "implicit_accuracy"}
CLIPPED_WARNING = 0.5  # share of a step's completions at the token cap above which the page warns
METHOD_NOTES = {
    "grpo": "Online: every step the model writes several ads per prompt, the simulated audience scores them, and "
            "the model moves toward the ads that beat their group's average; the KL term keeps it near the base "
            "model. The slowest steps on a CPU, since every step samples anew.",
    "rloo": "Online, like GRPO, but each ad is compared with the mean of the other ads for the same prompt (leave "
            "one out) rather than with the whole group's.",
    "dpo": "Offline: the base model writes a few ads per prompt once, the audience ranks them, and the model learns "
           "to prefer each prompt's best ad over its worst. Cheap steps; nothing is sampled while it trains.",
    "best_of_n_sft_dpo": "A recipe in two stages: the base model writes N ads per prompt, the model first learns to "
                         "write the best accepted one at once (supervised), then DPO refines it on best vs worst. "
                         "Aims for one tuned ad as good as the best of N base ads.",
    "diffusion_dpo": "Tunes the banner image model (a diffusers pipeline you configure) on pairs of images the "
                     "audience ranks. Needs an image model; judge it by drawing banners in the Studio.",
}
FORM = {"steps": "max_steps", "sft_steps": "sft_steps", "minutes": "time_budget_minutes", "lr": "learning_rate",
        "lora_r": "lora_r", "beta": "beta", "batch": "prompts_per_step", "generations": "num_generations",
        "users": "users", "tokens": "max_completion_length", "eval_steps": "eval_steps"}  # widget key -> setting
ADAPTERS = {"text": "copy", "brief": "brief", "image": "image"}  # settings `<kind>_adapter`, as promoted
METHODS = {"grpo": "GRPO (online)", "rloo": "RLOO (online)", "dpo": "DPO (offline)",
           "best_of_n_sft_dpo": "Best-of-N SFT, then DPO (recipe)",
           "diffusion_dpo": "Diffusion-DPO (banner art, diffusers)"}

st.title("Reward Tuning")
st.caption("TRL refines the copy writer with LoRA adapters from simulated clicks (train audience); runs are judged "
           "on held-out users by the judge audience they never trained on. TRL no longer ships a PPO trainer: "
           "GRPO and RLOO optimise the same clipped objective with a group baseline instead of a value model.")

env = services.settings.environment()
adapters = {kind: env["settings"].get(f"{kind}_adapter") or "" for kind in ADAPTERS}
cols = st.columns([4, 1])
cols[0].info(f"Studio generates with: **{env['settings']['text_model']}**"
             + "".join(f" + {ADAPTERS[kind]} adapter `{path}`" for kind, path in adapters.items() if path)
             + ("" if any(adapters.values()) else " (base model, no adapter)"))
if "promoted" in st.session_state:
    st.success(st.session_state.pop("promoted"))
if any(adapters.values()) and cols[1].button("Roll back to base", key="rollback"):
    services.tuning.rollback_adapter()
    st.rerun()

st.subheader("New run")


def widget_key(key: str, method: str) -> str:
    return f"beta-{method}" if key == "beta" else key  # per method: Diffusion-DPO's scale differs


def limit(name: str, method: str):
    """The range of one setting: beta on the method's own scale, the rest as `limits.TUNING` has them."""
    return BETA[method] if name == "beta" else TUNING[name]


def start_from(values: dict, method: str) -> None:
    """Put a preset's settings into the form (a button's callback: it runs before the form is drawn again)."""
    for key, name in FORM.items():
        if name in values:
            st.session_state[widget_key(key, method)] = limit(name, method).check(values[name])


method = st.selectbox("Method", list(METHODS), key="method", format_func=METHODS.get)
st.caption(METHOD_NOTES[method])
defaults = services.tuning.tuning_defaults(method)  # only the settings this method reads
for key, name in FORM.items():  # the form starts from the method's defaults; a preset replaces them all
    if name in defaults:
        st.session_state.setdefault(widget_key(key, method), limit(name, method).check(defaults[name]))
presets = st.columns([1, 1, 4])
presets[0].button("Quick test", key="preset_quick", on_click=start_from, args=(services.tuning.quick_test(method),
                                                                               method),
                  help="A run of a few minutes on a CPU: enough to see the curves move, not what the method can do")
presets[1].button("Defaults", key="preset_defaults", on_click=start_from, args=(defaults, method))


def number(column, label: str, key: str, **options) -> dict:
    """A number input for one setting the method reads (none for one it does not), its range from the limits,
    its value from the form's state: {setting: value}."""
    name = FORM[key]
    if name not in defaults:
        return {}
    value = column.number_input(label, *limit(name, method).bounds(), key=widget_key(key, method), **options)
    return {name: value}


with st.form("launch"):
    c = st.columns(4)
    config = {"method": method}
    config |= number(c[0], "SFT steps (stage 1)", "sft_steps",
                     help="Supervised steps on the best accepted sample of each prompt, before DPO continues from "
                          "that adapter")
    config |= number(c[1], "Steps" + (" (DPO stage)" if method == "best_of_n_sft_dpo" else ""), "steps")
    config |= number(c[1], "Time budget (minutes, 0 = none)", "minutes")
    config |= number(c[2], "Learning rate", "lr", format="%.1e")
    config |= number(c[3], "LoRA rank", "lora_r")
    c = st.columns(4)
    config |= number(c[0], "KL coefficient (beta)" if method != "diffusion_dpo" else "Beta (Diffusion-DPO scale)",
                     "beta", format="%.3f")
    config |= number(c[1], "Prompts per step (batch)", "batch")
    config |= number(c[2], "Generations per prompt", "generations")
    config |= number(c[3], "Training users", "users")
    c = st.columns(4)
    config |= number(c[0], "Max completion tokens", "tokens")
    config |= number(c[1], "Judge held-out users every N steps (0 = never)", "eval_steps")
    if "target" in defaults:
        config["target"] = c[2].selectbox(
            "Tune", ["copy", "brief"], key="target", disabled=method == "best_of_n_sft_dpo",
            help="The ad copy writer, or the art-direction writer scored by banner-level clicks (Diffusion-DPO "
                 "tunes the image model)", format_func={"copy": "Ad copy writer", "brief": "Banner brief writer"}.get)
        config["studio_gate"] = c[2].checkbox("Reward only copy the Studio would show", defaults["studio_gate"],
                                              key="gate")
        config["report_to"] = ["tensorboard"] if c[3].checkbox("Also log to TensorBoard", False,
                                                               key="tensorboard") else []
    if "preferences" in defaults:
        config["preferences"] = c[3].radio(
            "DPO pairs from", ["sampled", "logged"], key="preferences",
            format_func={"sampled": "its own samples, ranked by the simulated audience",
                         "logged": "logged feedback (real clicks)"}.get,
            help="Logged feedback: clicked vs less-clicked variants of the same item and segment (API decisions and "
                 "imported logs), where each was shown at least 30 times and the CTRs differ at 95% confidence")
    if method == "best_of_n_sft_dpo":
        config["target"] = "copy"
    if st.form_submit_button("Launch run", type="primary"):
        try:
            st.session_state["selected_run"] = services.tuning.launch_run(config)
            st.success(f"Launched run {st.session_state['selected_run']}")
        except ValueError as exc:
            st.error(str(exc))

runs = services.tuning.runs_table()
if runs.empty:
    st.write("No runs yet.")
    st.stop()

st.subheader("Runs")
st.dataframe(runs.drop(columns=["adapter_path"]).assign(judge_uplift=runs["judge_uplift"] * 100), hide_index=True,
             width="stretch", column_config={"judge_uplift": st.column_config.NumberColumn(
                 "judge uplift (pp)", format="%+.2f", help="Paired judge CTR of tuned minus base, in percentage "
                                                           "points, from the run's evaluation")})
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
        points = frame.dropna(subset=[name])  # metrics logged at different steps share the frame
        chart = px.line(points, x="step", y=name, color=colour, markers=True, title=TITLES.get(name, name),
                        log_y=name == "learning_rate")
        span = float(points["step"].max() - points["step"].min())
        chart.update_xaxes(tick0=0, dtick=max(1, math.ceil(span / 8)), tickformat="d")  # steps are whole numbers
        if name in PERCENT:  # shares run from 0 to 100%; click rates from 0 (a lone point is not padded to ±100%)
            rates = name in ("reward", "judge_ctr")
            chart.update_yaxes(tickformat=".2%" if rates else ".0%",
                               range=[0, 1.15 * max(float(points[name].max()), 1e-4)] if rates else [0, 1.02])
        if name == "learning_rate":
            chart.update_yaxes(exponentformat="e")
        chart.update_layout(height=260, margin={"t": 40, "b": 10})
        st.plotly_chart(chart, width="stretch", key=f"{name}-{colour}")


def clipped_warning(frame: pd.DataFrame, run: dict) -> None:
    """Warn when most of the latest step's completions stopped at the token cap: the reward then judges cut-off
    copy, and the curves say nothing about it."""
    name = "completions/clipped_ratio"
    if name not in frame.columns or frame[name].dropna().empty:
        return
    share = float(frame.dropna(subset=[name]).sort_values("step")[name].iloc[-1])
    if share > CLIPPED_WARNING:
        cap = (run.get("config") or {}).get("max_completion_length", "the")
        st.warning(f"{share:.0%} of the latest step's completions hit the {cap}-token cap: the reward is judging "
                   "cut-off copy. Raise Max completion tokens for the next run.")


@st.fragment(run_every=2)
def live(run_id: str) -> None:
    """Redrawn every 2 s: status, progress and curves of the selected run."""
    run = services.tuning.run_details(run_id)
    state = run["status"]
    seen = st.session_state.setdefault("seen_status", {})
    if seen.get(run_id) in ("queued", "running") and state not in ("queued", "running"):
        seen[run_id] = state
        st.rerun(scope="app")  # the run ended: refresh evaluation, promotion and the run table too
    evaluating = (run.get("evaluation") or {}).get("status")
    if seen.get(f"{run_id}:evaluate") == "running" and evaluating != "running":
        seen[f"{run_id}:evaluate"] = evaluating
        st.rerun(scope="app")  # the evaluation ended: show it
    seen[run_id], seen[f"{run_id}:evaluate"] = state, evaluating
    st.progress(min(run["global_step"] / max(run["max_steps"], 1), 1.0),
                text=f"{state} · step {run['global_step']} of {run['max_steps']}"
                + (f" · {eta(run)}" if state == "running" else ""))
    if run.get("error"):
        st.error(run["error"][-1500:])
    buttons = st.columns(3)
    if state in ("queued", "running") and buttons[0].button("Cancel", key="cancel"):
        services.tuning.cancel_run(run_id)
    if state in ("failed", "cancelled") and buttons[1].button("Resume" if run.get("checkpoint") else "Restart",
                                                              key="resume"):
        services.tuning.resume_run(run_id)
    frame = services.tuning.run_metrics(run_id)
    clipped_warning(frame, run)
    curves(frame)


live(run_id)
run = services.tuning.run_details(run_id)

st.subheader("Evaluation on held-out users (judge audience)")
evaluation = run.get("evaluation") or {}
if run.get("adapter_path"):
    c = st.columns([1, 1, 1, 1, 2])
    eval_users = c[0].number_input("Held-out users", *HELD_OUT_USERS.bounds(), 16, key="eval_users")
    best_of = c[1].number_input("Best of N (base)", *BEST_OF.bounds(), 4, key="best_of")
    draws = c[2].number_input("Draws per prompt", *DRAWS.bounds(), 1, key="draws",
                              help="Outputs per prompt and setting, averaged: narrower intervals, more sampling")
    if evaluation.get("status") == "running":
        c[3].button("Evaluating…", disabled=True, key="evaluating")
    elif c[3].button("Evaluate", key="evaluate"):
        try:
            services.tuning.start_evaluation(run_id, users=int(eval_users), best_of=int(best_of), draws=int(draws))
            st.rerun()
        except ValueError as exc:
            st.error(str(exc))
    if c[4].button("Promote to Studio", key="promote"):
        st.session_state["promoted"] = f"The Studio now generates with {services.tuning.promote_run(run_id)}"
        st.rerun()  # redraw the header: it shows the active adapters and the roll-back button
if evaluation.get("status") == "running":
    st.info(f"Evaluating on {evaluation['options'].get('users')} held-out users in a worker process: sampling base, "
            f"best-of-{evaluation['options'].get('best_of')} and tuned copy (a few minutes on a CPU)…")
elif evaluation.get("status") == "failed":
    st.error("The evaluation failed:\n" + str(evaluation.get("error", ""))[-1500:])
elif evaluation.get("settings"):
    settings_ = evaluation["settings"]
    ctr = {name: s["judge_ctr"] for name, s in settings_.items()}
    def bound(c: dict, side: str) -> float:  # a bound of 0 is a bound: only a missing one falls back to the mean
        return c["mean"] if c[side] is None else c[side]

    bars = go.Figure(go.Bar(
        x=list(ctr), y=[c["mean"] for c in ctr.values()],
        error_y={"type": "data", "symmetric": False,
                 "array": [bound(c, "ci_high") - c["mean"] for c in ctr.values()],
                 "arrayminus": [c["mean"] - bound(c, "ci_low") for c in ctr.values()]}))
    draws = evaluation.get("draws", 1)
    bars.update_layout(title=f"Judge CTR with 95% intervals ({evaluation['users']} held-out users"
                             + (f", {draws} draws each)" if draws > 1 else ")"),
                       yaxis_tickformat=".2%")
    st.plotly_chart(bars, width="stretch")
    uplifts = evaluation.get("uplift") or {}
    for column, (name, uplift) in zip(st.columns(max(len(uplifts), 1)), uplifts.items(), strict=False):
        control = ctr[name.removeprefix("tuned_vs_")]["mean"]  # the setting tuned is compared with
        relative = f"{uplift['mean'] / control:+.0%} relative" if control > 0 else None
        column.metric(f"Paired uplift, {name.replace('_', ' ')}", f"{uplift['mean'] * 100:+.2f} pp", relative,
                      help=f"Judge CTR of tuned minus {name.removeprefix('tuned_vs_').replace('_', ' ')} on the "
                           f"same prompts, in percentage points; 95% interval {uplift['ci_low'] * 100:+.2f} to "
                           f"{uplift['ci_high'] * 100:+.2f} pp")
    table = pd.DataFrame({name: {k: v for k, v in s.items() if k != "judge_ctr"} for name, s in settings_.items()})
    st.dataframe(table, width="stretch")
    kl = evaluation["kl_to_base"]
    st.caption(f"KL from the base model: {kl['per_token']:.3f} nats per token ({kl['per_sequence']:.2f} per "
               "answer), exact over the vocabulary at every position of the tuned samples.")
    st.write("Sample copy for the same prompts (look for reward hacking):")
    st.dataframe(pd.DataFrame(evaluation["samples"]), hide_index=True, width="stretch")
elif run.get("adapter_path"):
    st.write("Not evaluated yet.")

st.subheader("Compare runs")
chosen = st.multiselect("Runs", ids, default=ids[: min(3, len(ids))], key="compare_runs")
if chosen:
    frames = [services.tuning.run_metrics(r) for r in chosen]
    frames = [f for f in frames if not f.empty]
    if frames:
        curves(pd.concat(frames, ignore_index=True), colour="run")
