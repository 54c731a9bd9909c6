"""AdLoop command line: the dashboard's actions without a browser.

    python cli.py profile --user 1 --json
    python cli.py import --name my-shop --items items.csv --interactions interactions.csv
    python cli.py eval-intent --json
"""

from __future__ import annotations

import argparse
import json
import sys

import services
from generation.models import ModelUnavailable
from store.csv_import import ImportFailed
from store.repository import UnknownDataset, UnknownUser


def _print(payload: object, as_json: bool, text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if as_json else text)


def _stderr_progress(enabled: bool):
    def report(fraction: float, message: str) -> None:
        if enabled:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    return report


def cmd_profile(args: argparse.Namespace) -> None:
    services.ensure_demo_data()
    result = services.profile(args.dataset, args.user, recompute=args.recompute, use_llm=not args.no_llm,
                              progress=_stderr_progress(not args.json))
    lines = [f"User {result['user_id']} ({result['history_size']} interactions, model {result['model']})",
             "Interests: " + ", ".join(f"{i['label']} {i['weight']:.0%}" for i in result["interests"]),
             "Themes: " + "; ".join(t["label"] for t in result["themes"]),
             f"Intent ({result['intent_source']}): {result['intent']['summary']}"]
    _print(result, args.json, "\n".join(lines))


def cmd_import(args: argparse.Namespace) -> None:
    counts = services.import_csv_files(args.name, args.items, args.interactions, replace=args.replace)
    _print({"dataset": args.name, **counts}, args.json,
           f"Imported dataset '{args.name}': {counts['users']} users, {counts['items']} items, "
           f"{counts['interactions']} interactions")


def cmd_eval_intent(args: argparse.Namespace) -> None:
    report = services.eval_intent(args.dataset, args.users, args.negatives, args.seed,
                                  progress=_stderr_progress(not args.json))
    k = report["k"]
    rows = [f"{'method':<22} {'HR@' + str(k):>8} {'NDCG@' + str(k):>8}"]
    rows += [f"{m:<22} {v[f'hr@{k}']:>8.4f} {v[f'ndcg@{k}']:>8.4f}" for m, v in report["results"].items()]
    rows.append(f"{report['users']} users, {report['negatives']} sampled negatives each, "
                f"chance HR@{k} = {report['chance_hr']:.3f}, {report['seconds']} s")
    _print(report, args.json, "\n".join(rows))


def cmd_prepare(args: argparse.Namespace) -> None:
    report = services.prepare(progress=_stderr_progress(not args.json))
    _print(report, args.json, "\n".join(f"{k}: {v}" for k, v in report.items()))


def cmd_users(args: argparse.Namespace) -> None:
    services.ensure_demo_data()
    frame = services.users(args.dataset, args.query, args.limit)
    _print(frame.to_dict("records"), args.json, frame.to_string(index=False))


def cmd_datasets(args: argparse.Namespace) -> None:
    frame = services.datasets()
    _print(frame.to_dict("records"), args.json, frame.to_string(index=False))


def cmd_settings(args: argparse.Namespace) -> None:
    env = services.environment()
    text = "\n".join(f"{k:<16} {v}  ({env['sources'][k]})" for k, v in env["settings"].items())
    _print(env, args.json, f"{text}\ndevice           {env['device']}\nsettings file    {env['settings_file']}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="cli.py", description="AdLoop: personalized ad creation from user history")
    sub = root.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
        p.set_defaults(handler=handler)
        return p

    p = command("profile", cmd_profile, "infer a user's interests, themes and current intent")
    p.add_argument("--user", required=True)
    p.add_argument("--dataset", default=services.DEFAULT_DATASET)
    p.add_argument("--recompute", action="store_true", help="ignore the cached profile")
    p.add_argument("--no-llm", action="store_true", help="summary from the structured signals only")

    p = command("import", cmd_import, "import your own items and interactions CSV files")
    p.add_argument("--items", required=True)
    p.add_argument("--interactions", required=True)
    p.add_argument("--name", default="my-data", help="dataset name (letters, digits, . _ -)")
    p.add_argument("--replace", action="store_true", help="replace a dataset of the same name")

    p = command("eval-intent", cmd_eval_intent, "leave-last-one-out ranking quality of profiles vs baselines")
    p.add_argument("--dataset", default=services.DEFAULT_DATASET)
    p.add_argument("--users", type=_positive, default=None, help="evaluate a random sample of users")
    p.add_argument("--negatives", type=_positive, default=100)
    p.add_argument("--seed", type=int, default=0)

    p = command("users", cmd_users, "list users")
    p.add_argument("--dataset", default=services.DEFAULT_DATASET)
    p.add_argument("--query", default="")
    p.add_argument("--limit", type=_positive, default=20)

    command("prepare", cmd_prepare, "load the demo dataset, embed its items and convert the embedded LLM")
    command("datasets", cmd_datasets, "list loaded datasets")
    command("settings", cmd_settings, "show the active models, device and database")
    return root


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if not 1 <= number <= 1_000_000:
        raise argparse.ArgumentTypeError(f"{number} is out of range (1 to 1,000,000)")
    return number


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.handler(args)
    except ImportFailed as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except (UnknownUser, UnknownDataset, ModelUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
