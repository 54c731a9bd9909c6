"""AdLoop command line: the dashboard's actions without a browser.

    python cli.py profile --user 1 --json
    python cli.py import --name my-shop --items items.csv --interactions interactions.csv
    python cli.py eval-intent --json
    python cli.py validate-simulator --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import NoReturn

import limits
import services
from generation import writer
from generation.models import ModelUnavailable
from rewards.variant_file import VariantFileError
from store.csv_import import ImportFailed
from tuning.configs import METHODS, PREFERENCES, REPORT_TO, TARGETS


def _print(payload: object, as_json: bool, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else text)


def _stderr_progress(enabled: bool):
    def report(fraction: float, message: str) -> None:
        if enabled:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    return report


def cmd_profile(args: argparse.Namespace) -> None:
    services.common.ensure_demo_data()
    result = services.audience.profile(args.dataset, args.user, recompute=args.recompute, use_llm=not args.no_llm,
                              progress=_stderr_progress(not args.json))
    lines = [f"User {result['user_id']} ({result['history_size']} interactions, model {result['model']})",
             "Interests: " + ", ".join(f"{i['label']} {i['weight']:.0%}" for i in result["interests"]),
             "Themes: " + "; ".join(t["label"] for t in result["themes"]),
             "Taste neighbours: " + ", ".join(f"user {n['user_id']} ({n['shared']} shared)"
                                              for n in result["neighbours"]),
             "Likely next: " + "; ".join(f"{p['title']} (liked by {p['neighbours_liked']} of "
                                         f"{result['neighbour_pool']} nearest users)" for p in result["picks"]),
             f"Intent ({result['intent_source']}): {result['intent']['summary']}"]
    if args.item is not None:
        result["hooks"] = services.audience.hooks(args.dataset, args.user, args.item)
        lines.append(f"Hooks for item {args.item}: " + ("; ".join(
            f"{h['title']} (rated {h['rating']:g}, their mean {h['user_mean']:g}, relatedness {h['relatedness']:.2f})"
            for h in result["hooks"]) or "none related enough"))
    _print(result, args.json, "\n".join(lines))


def cmd_import(args: argparse.Namespace) -> None:
    counts = services.audience.import_csv_files(args.name, args.items, args.interactions, replace=args.replace)
    _print({"dataset": args.name, **counts}, args.json, services.audience.import_message(args.name, counts))


def cmd_import_log(args: argparse.Namespace) -> None:
    counts = services.campaigns.import_log_file(args.dataset, args.campaign, args.file)
    _print({"dataset": args.dataset, "campaign": args.campaign, **counts}, args.json,
           f"Imported campaign '{args.campaign}' into {args.dataset}: {counts['impressions']:,} impressions, "
           f"{counts['clicks']:,} clicks, {counts['conversions']:,} conversions")


def cmd_eval_intent(args: argparse.Namespace) -> None:
    report = services.audience.eval_intent(args.dataset, args.users, args.negatives, args.seed,
                                  progress=_stderr_progress(not args.json))
    k = report["k"]
    rows = [f"{'method':<22} {'HR@' + str(k):>8} {'NDCG@' + str(k):>8}"]
    rows += [f"{m:<22} {v[f'hr@{k}']:>8.4f} {v[f'ndcg@{k}']:>8.4f}" for m, v in report["results"].items()]
    rows.append(f"{report['users']} users, {report['negatives']} sampled negatives each, "
                f"chance HR@{k} = {report['chance_hr']:.3f}, {report['seconds']} s")
    _print(report, args.json, "\n".join(rows))


def cmd_validate_simulator(args: argparse.Namespace) -> None:
    report = services.campaigns.validate_simulator(args.dataset, args.users, args.seed,
                                                  progress=_stderr_progress(not args.json))
    names = list(report["appeal_auc"])
    rows = [f"{'check':<34}" + "".join(f"{n:>9}" for n in names)]
    rows.append(f"{'appeal AUC (held-out liked)':<34}" + "".join(f"{report['appeal_auc'][n]['auc']:>9.4f}"
                                                                  for n in names))
    for attack in report["attack_win_rate"][names[0]]:
        rows.append(f"{'clean beats ' + attack:<34}" + "".join(f"{report['attack_win_rate'][n][attack]:>9.1%}"
                                                               for n in names))
    for key in report["clean_ctr"][names[0]]:
        label = "clean CTR in 0.5%-5%" if key == "share_in_range" else f"clean CTR {key}"
        rows.append(f"{label:<34}" + "".join(f"{report['clean_ctr'][n][key]:>9.2%}" for n in names))
    rows.append(f"{report['users']} users, train/judge Spearman {report['train_judge_spearman']:.3f}, "
                f"{report['seconds']} s")
    rows += [f"{'PASS' if ok else 'FAIL'}  {check}" for check, ok in report["passed"].items()]
    _print(report, args.json, "\n".join(rows))
    if not all(report["passed"].values()):
        raise ValueError("the simulated audience failed validation: " +
                         ", ".join(c for c, ok in report["passed"].items() if not ok))


def cmd_prepare(args: argparse.Namespace) -> None:
    report = services.settings.prepare(progress=_stderr_progress(not args.json))
    _print(report, args.json, "\n".join(f"{k}: {v}" for k, v in report.items()))


def cmd_simulate(args: argparse.Namespace) -> None:
    services.common.ensure_demo_data()
    variants = services.campaigns.parse_variants_file(args.variants)
    item = args.item or services.audience.default_item(args.dataset)
    run = services.campaigns.run_campaign(args.dataset, item, variants, args.segment, args.group, args.impressions,
                                args.allocation, args.seed, args.audience, max_users=args.users,
                                progress=_stderr_progress(not args.json))
    rows = [{"variant": int(r.variant) + 1, "title": variants[int(r.variant)]["title"],
             "impressions": int(r.impressions), "clicks": int(r.clicks), "ctr": round(float(r.ctr), 5),
             "ci95": [round(float(r.ci_low), 5), round(float(r.ci_high), 5)]} for r in run["variants"].itertuples()]
    report = {"dataset": args.dataset, "item_id": item, "allocation": args.allocation, "users": run["users"],
              "impressions": args.impressions, "regret": round(run["regret"], 2), "variants": rows}
    lines = [f"{r['variant']:>2} {r['title'][:40]:<40} {r['impressions']:>8} {r['clicks']:>6} {r['ctr']:>7.2%} "
             f"[{r['ci95'][0]:.2%}, {r['ci95'][1]:.2%}]" for r in rows]
    _print(report, args.json, "\n".join(lines) + f"\nregret {report['regret']} expected clicks")


def cmd_generate(args: argparse.Namespace) -> None:
    services.common.ensure_demo_data()
    segment = (args.segment, args.group) if args.user is None else None
    out = _output_folder(args.out)
    progress = _stderr_progress(not args.json)
    if args.engine == "ray" or args.batch_users is not None:
        if args.user is not None:
            raise ValueError("--engine ray and --batch-users run a segment job: leave out --user")
        _generate_segment_job(args, segment, out, progress)
        return
    variants = services.studio.generate(args.dataset, args.item, args.user, segment, args.n, args.seed, args.renderer,
                                 args.users, args.candidates, progress=progress)
    report = [_variant_report(v, out) for v in variants]
    lines = [f"{'ok ' if v['safety']['status'] == 'passed' else 'REJ'} {v['score'] or 0:6.2%}  {v['title']} | "
             f"{v['body']} | {v['cta']}" for v in report]
    _print(report, args.json, "\n".join(lines) + f"\nbanners in {out}")


def _variant_report(variant: dict, out: Path) -> dict:
    """A variant as the CLI reports it, its banners copied into `out`."""
    banners = {}
    for size, path in (variant["banners"] or {}).items():
        target = out / Path(path).name
        shutil.copyfile(path, target)
        banners[size] = str(target)
    return {k: variant[k] for k in ("id", "user_id", "item_id", "title", "body", "cta", "score", "model", "adapter",
                                    "seed", "safety", "angle", "targets", "profile_version", "candidates")} \
        | {"banners": banners}


def _generate_segment_job(args: argparse.Namespace, segment: tuple[str, str | None], out: Path, progress) -> None:
    """A whole segment (--users up to the audience) in batches, local or on Ray; rerun the same command to resume."""
    jobs = services.segment_job
    job = jobs.SegmentJob(args.dataset, args.item, segment, args.users, args.n, args.seed, args.candidates,
                          args.renderer, args.batch_users or jobs.DEFAULT_BATCH_USERS)
    result = jobs.run(job, args.engine, args.workers, progress=progress)
    result["variants_list"] = [_variant_report(v, out) for v in jobs.stored_rows(job)]
    _print(result, args.json, f"{result['job']} ({result['engine']}): {result['variants']} variants for "
                              f"{result['users']} users, {result['accepted_share']:.0%} accepted, "
                              f"{result['skipped']} of {result['batches']} batches already stored; "
                              f"{result['seconds']} s; banners in {out}")


def _output_folder(text: str) -> Path:
    """The --out folder, created before any work: a path that cannot be a folder is reported at once, not after
    minutes of generation with the variants already stored."""
    out = Path(text).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ValueError(f"--out {text!r} cannot be used as a folder: {getattr(exc, 'strerror', None) or exc}"
                         ) from exc
    return out


def cmd_tune(args: argparse.Namespace) -> None:
    from tuning import runs

    services.common.ensure_demo_data()
    given = {"max_steps": args.steps, "learning_rate": args.learning_rate, "lora_r": args.lora_r,
             "users": args.users, "num_generations": args.generations, "prompts_per_step": args.prompts_per_step,
             "seed": args.seed, "target": args.target, "time_budget_minutes": args.minutes,
             "eval_steps": args.eval_steps, "report_to": args.report_to, "sft_steps": args.sft_steps,
             "preferences": args.preferences, "min_impressions": args.min_impressions, "beta": args.beta}
    config = {"method": args.method} | {k: v for k, v in given.items() if v is not None}  # the rest: the method's
    run_id = services.tuning.launch_run(config)
    if not args.json:
        print(f"run {run_id} started; waiting (Ctrl-C leaves it running)", file=sys.stderr)
    run = runs.wait(run_id, timeout=args.timeout)
    steps = services.tuning.run_metrics(run_id)
    final = steps.drop(columns=["run", "logged_at"]).iloc[-1].dropna().to_dict() if "step" in steps else {}
    report = {"run_id": run_id, "status": run["status"], "steps": run["global_step"],
              "adapter": run["adapter_path"], "final_metrics": final, "error": run["error"]}
    _print(report, args.json, "\n".join(f"{k}: {v}" for k, v in report.items()))
    if run["status"] != "finished":
        raise ValueError(f"run {run_id} ended {run['status']}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    result = services.tuning.evaluate_run(args.run, users=args.users, best_of=args.best_of, draws=args.draws)
    lines = [f"{name:<10} judge CTR {s['judge_ctr']['mean']:.3%}  train {s['train_ctr']:.3%}  "
             + "  ".join(f"{k} {v:.2f}" for k, v in s.items() if isinstance(v, float) and k != "train_ctr")
             for name, s in result["settings"].items()]
    lines += [f"uplift {name}: {u['mean'] * 100:+.3f} percentage points (95% CI {u['ci_low'] * 100:+.3f} to "
              f"{u['ci_high'] * 100:+.3f})" for name, u in result["uplift"].items()]
    kl = result["kl_to_base"]
    _print(result, args.json, "\n".join(lines) + f"\nKL from the base model: {kl['per_token']:.3f} nats per token "
                                                 f"({kl['per_sequence']:.2f} per answer)")


def cmd_serve(args: argparse.Namespace) -> None:
    """The serving API under uvicorn, in one process: its group-commit writer and the bandit's counts are
    per process (measured with SQLite, two worker processes fighting over the write lock served fewer
    decisions than one)."""
    import uvicorn

    from api.app import ServeConfig, create_app

    given = {"rate_limit": args.rate_limit, "commit_batch": args.commit_batch}  # None: ServeConfig's default
    app = create_app(ServeConfig(dataset=args.dataset, secrets=Path(args.secrets) if args.secrets else None,
                                 **{k: v for k, v in given.items() if v is not None}))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)


def cmd_users(args: argparse.Namespace) -> None:
    services.common.ensure_demo_data()
    frame = services.audience.users(args.dataset, args.query, args.limit)
    _print(frame.to_dict("records"), args.json, frame.to_string(index=False))


def cmd_datasets(args: argparse.Namespace) -> None:
    frame = services.audience.datasets()
    _print(frame.to_dict("records"), args.json, frame.to_string(index=False))


def cmd_settings(args: argparse.Namespace) -> None:
    env = services.settings.environment()
    text = "\n".join(f"{k:<16} {v}  ({env['sources'][k]})" for k, v in env["settings"].items())
    _print(env, args.json, f"{text}\ndevice           {env['device']}\nsettings file    {env['settings_file']}")
    if env["problems"]:  # the exit status tells a deployment script that the configuration will fail
        raise ValueError("; ".join(env["problems"]))


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line that names the problem, not a usage block that buries it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="cli.py", description="AdLoop: personalized ad creation from user history")
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(handler=handler)
        return p

    p = command("profile", cmd_profile, "infer a user's interests, themes and current intent")
    p.add_argument("--user", required=True)
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--recompute", action="store_true", help="ignore the cached profile")
    p.add_argument("--no-llm", action="store_true", help="summary from the structured signals only")
    p.add_argument("--item", help="an item to promote: also list the user's liked items most related to it (hooks)")

    p = command("import", cmd_import, "import your own items and interactions CSV files")
    p.add_argument("--items", required=True)
    p.add_argument("--interactions", required=True)
    p.add_argument("--name", default="my-data", help="dataset name (letters, digits, . _ -)")
    p.add_argument("--replace", action="store_true", help="replace a dataset of the same name")

    p = command("import-log", cmd_import_log, "import a real campaign's log (impression_id, user_id, item_id, "
                "variant, clicked, timestamp[, converted]) as logged feedback")
    p.add_argument("--file", required=True)
    p.add_argument("--campaign", required=True, help="a name for the campaign (letters, digits, . _ -)")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)

    p = command("eval-intent", cmd_eval_intent, "leave-last-one-out ranking quality of profiles vs baselines")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--users", type=limits.EVAL_USERS.argument, default=None, help="evaluate a random sample of users")
    p.add_argument("--negatives", type=limits.NEGATIVES.argument, default=100)
    p.add_argument("--seed", type=limits.SEED.argument, default=0)

    p = command("simulate", cmd_simulate, "run a simulated campaign over ad variants (A/B or Thompson)")
    p.add_argument("--variants", required=True, help="CSV (title, body, cta) or JSON list of variants")
    p.add_argument("--item", default=None, help="item to promote (default: the most popular)")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--users", type=limits.CAMPAIGN_USERS.argument, default=None,
                   help="simulated users drawn from the segment")
    p.add_argument("--impressions", type=limits.IMPRESSIONS.argument, default=10_000)
    p.add_argument("--allocation", choices=["ab", "thompson"], default="thompson")
    p.add_argument("--segment", default="all", help="all, gender, age_band, occupation or taste")
    p.add_argument("--group", default=None, help="the segment's group, e.g. F or 25-34 or 'Sci-Fi fans'")
    p.add_argument("--audience", choices=["train", "judge"], default="train")
    p.add_argument("--seed", type=limits.SEED.argument, default=0)

    p = command("validate-simulator", cmd_validate_simulator,
                "check the simulated audience: appeal AUC, attacks that must lose, CTR calibration")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--users", type=limits.SIMULATOR_USERS.argument, default=200,
                   help="users sampled for the attack and CTR checks")
    p.add_argument("--seed", type=limits.SEED.argument, default=0)

    p = command("generate", cmd_generate, "write, check, illustrate and score ad variants for a user or segment")
    p.add_argument("--item", required=True)
    p.add_argument("--user", default=None, help="one user (default: a segment, see --segment)")
    p.add_argument("--n", type=limits.VARIANTS_PER_USER.argument, default=4,
                   help=f"variants per user (at most {limits.VARIANTS_PER_REQUEST} in all)")
    p.add_argument("--out", required=True, help="folder for the banner PNGs")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--segment", default="all", help="all, gender, age_band, occupation or taste")
    p.add_argument("--group", default=None)
    p.add_argument("--users", type=limits.JOB_USERS.argument, default=8,
                   help=f"users drawn from the segment (at most {int(limits.SEGMENT_USERS.high)} in one request; "
                        "a segment job with --engine ray or --batch-users takes the whole audience)")
    p.add_argument("--engine", choices=list(services.segment_job.ENGINES), default="local",
                   help="ray: a resumable segment job on Ray Data actors (RAY_ADDRESS names a cluster)")
    p.add_argument("--batch-users", type=limits.BATCH_USERS.argument, default=None,
                   help="users per stored batch of a segment job (default "
                        f"{services.segment_job.DEFAULT_BATCH_USERS}); a restarted job skips the stored ones")
    p.add_argument("--workers", type=limits.WORKERS.argument, default=None,
                   help="Ray actors (default: one per CPU core, or per GPU when the cluster has them)")
    p.add_argument("--renderer", default=None, help="procedural or a diffusers model id/folder")
    p.add_argument("--candidates", type=limits.CANDIDATES.argument, default=writer.DEFAULT_CANDIDATES,
                   help="samples drawn per variant; the one the train audience rates best is kept")
    p.add_argument("--seed", type=limits.SEED.argument, default=0)

    p = command("tune", cmd_tune, "refine the copy writer with TRL (GRPO, RLOO, DPO, or best-of-N SFT then DPO) "
                "from simulated clicks; an option left out takes the method's default, one the method does not "
                "read is refused")
    p.add_argument("--method", choices=list(METHODS), default="grpo",
                   help="best_of_n_sft_dpo: SFT on the best accepted of N samples per prompt, then DPO from it")
    p.add_argument("--target", choices=list(TARGETS), default=None,
                   help="what an LLM method tunes: the ad copy (default) or the banner's art direction")
    p.add_argument("--preferences", choices=list(PREFERENCES), default=None,
                   help="dpo: pairs from its own samples ranked by the simulated audience (default), or from logged "
                        "feedback (real clicks from the API and imported logs)")
    p.add_argument("--min-impressions", type=limits.TUNING["min_impressions"].argument, default=None,
                   help="logged preferences: impressions each variant needs in its segment before it is compared")
    p.add_argument("--minutes", type=limits.TUNING["time_budget_minutes"].argument, default=None,
                   help="time budget (default 0: none); stops after a checkpoint")
    p.add_argument("--eval-steps", type=limits.TUNING["eval_steps"].argument, default=None,
                   help="LLM methods: judge held-out users every N steps (0: never)")
    p.add_argument("--report-to", nargs="*", default=None, choices=list(REPORT_TO),
                   help="LLM methods: also log to these trackers (in the run folder)")
    p.add_argument("--steps", type=limits.TUNING["max_steps"].argument, default=None,
                   help="training steps (for best_of_n_sft_dpo: its DPO steps)")
    p.add_argument("--sft-steps", type=limits.TUNING["sft_steps"].argument, default=None,
                   help="best_of_n_sft_dpo: supervised steps before DPO")
    p.add_argument("--learning-rate", type=limits.TUNING["learning_rate"].argument, default=None)
    p.add_argument("--lora-r", type=limits.TUNING["lora_r"].argument, default=None)
    p.add_argument("--beta", type=limits.TUNING["beta"].argument, default=None,
                   help="KL coefficient on the method's own scale (limits.BETA)")
    p.add_argument("--users", type=limits.TUNING["users"].argument, default=None, help="training users")
    p.add_argument("--generations", type=limits.TUNING["num_generations"].argument, default=None,
                   help="completions per prompt")
    p.add_argument("--prompts-per-step", type=limits.TUNING["prompts_per_step"].argument, default=None)
    p.add_argument("--seed", type=limits.SEED.argument, default=None)
    p.add_argument("--timeout", type=limits.WAIT_SECONDS.argument, default=3600, help="seconds to wait for the run")

    p = command("evaluate", cmd_evaluate, "judge a run's adapter on held-out users (judge audience)")
    p.add_argument("--run", required=True)
    p.add_argument("--users", type=limits.HELD_OUT_USERS.argument, default=16)
    p.add_argument("--best-of", type=limits.BEST_OF.argument, default=4)
    p.add_argument("--draws", type=limits.DRAWS.argument, default=1,
                   help="outputs per prompt and setting, averaged (less noise, more sampling)")

    p = command("serve", cmd_serve, "serve the HTTP API (variants, decisions, events, report; docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=limits.PORT.argument, default=8000)
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET, help="the dataset when a request names none")
    p.add_argument("--secrets", default=None,
                   help="secrets.toml with the login and [adloop.api_keys] (default: the dashboard's)")
    p.add_argument("--rate-limit", type=limits.RATE_LIMIT.argument, default=None,
                   help="requests a second per API key, or per address when open (0: no limit; default 2000)")
    p.add_argument("--commit-batch", type=limits.COMMIT_BATCH.argument, default=None,
                   help="decisions and events committed together at most (1: one commit per request; default 1000)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="info")
    p.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=False,
                   help="log every request (off by default: it costs a tenth of the throughput)")

    p = command("users", cmd_users, "list users")
    p.add_argument("--dataset", default=services.common.DEFAULT_DATASET)
    p.add_argument("--query", default="")
    p.add_argument("--limit", type=limits.LIST_LIMIT.argument, default=20)

    command("prepare", cmd_prepare, "load the demo dataset, embed its items and convert the embedded LLM")
    command("datasets", cmd_datasets, "list loaded datasets")
    command("settings", cmd_settings, "show the active models, device and database")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except ImportFailed as exc:  # "error: Import failed with N problem(s)", then one line per problem
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, ModelUnavailable, VariantFileError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
