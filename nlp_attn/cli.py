"""The `nlp-attn` command line: one subcommand per stage of the flow.

A thin layer over the library: it parses arguments, loads the config, calls one
function and turns expected failures into one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from nlp_attn.errors import NlpAttnError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_EXPECTED = 2
EXIT_AUDIT_FINDINGS = 4


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `nlp-attn` command line and returns its exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _quiet_tensorflow(debug=args.debug)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
    )
    try:
        return args.handler(args) or EXIT_OK
    except NlpAttnError as error:
        if args.debug:
            raise
        print(f"nlp-attn {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_EXPECTED
    except KeyboardInterrupt:
        print(f"nlp-attn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the last line of defence
        if args.debug:
            raise
        print(
            f"nlp-attn {args.command}: unexpected error: "
            f"{type(error).__name__}: {_one_line(error)} (rerun with --debug for "
            "the traceback)",
            file=sys.stderr,
        )
        return EXIT_UNEXPECTED


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nlp-attn",
        description="Train, audit, evaluate, explain and export attention-pooling "
        "text classifiers.",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and TensorFlow logs"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = _add_command(commands, "train", "train a classifier", _train)
    _add_config_arguments(train)
    train.add_argument("--run-dir", help="the run directory to create (or resume)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last completed epoch",
    )
    train.add_argument(
        "--skip-audit",
        action="store_true",
        help="train even when the trainability audit finds problems",
    )

    evaluate = _add_command(commands, "evaluate", "evaluate a trained run", _evaluate)
    _add_run_argument(evaluate)
    evaluate.add_argument("--data", help="a data spec to evaluate on instead")
    evaluate.add_argument("--split", help="the split to read (default: test)")
    evaluate.add_argument("--out", help="where to write report.json")

    predict = _add_command(commands, "predict", "label texts", _predict)
    _add_run_argument(predict)
    predict.add_argument("texts", nargs="*", metavar="TEXT")
    predict.add_argument("--input", help="a file with one text a line, or a data spec")
    predict.add_argument("--json", action="store_true", help="print JSON lines")

    explain = _add_command(
        commands, "explain", "show per-token attention for texts", _explain
    )
    _add_run_argument(explain)
    explain.add_argument("texts", nargs="+", metavar="TEXT")
    explain.add_argument("--html", help="also write a self-contained HTML page")

    export = _add_command(
        commands, "export", "export a raw-string SavedModel for serving", _export
    )
    _add_run_argument(export)
    export.add_argument("--out", help="where to write the SavedModel")

    audit = _add_command(
        commands, "audit", "audit the model a config would train", _audit
    )
    _add_config_arguments(audit)

    data = _add_command(commands, "data", "prepare or describe the data", _data)
    data.add_argument("action", choices=["prepare", "stats"])
    _add_config_arguments(data)
    return parser


def _add_command(commands, name: str, help_text: str, handler: Callable):
    command = commands.add_parser(name, help=help_text, description=help_text)
    command.set_defaults(handler=handler)
    return command


def _add_config_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config", help="a YAML config (default: configs/default.yaml)"
    )
    command.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key, e.g. --set train.epochs=3 (repeatable)",
    )


def _add_run_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("--run", required=True, help="a run directory made by train")


def _load_config(args: argparse.Namespace):
    from nlp_attn.config import load_config

    return load_config(args.config, args.overrides)


def _train(args: argparse.Namespace) -> int:
    from nlp_attn.config import load_config

    if args.resume:
        if not args.run_dir:
            raise NlpAttnError("--resume needs --run-dir naming the run to continue")
        from nlp_attn.rundir import CONFIG_FILE

        config_path = os.path.join(args.run_dir, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise NlpAttnError(f"cannot resume: {config_path} does not exist")
        config = load_config(args.config or config_path, args.overrides)
    else:
        config = _load_config(args)

    from nlp_attn.train import AuditFailed, train

    try:
        summary = train(
            config,
            run_dir=args.run_dir,
            resume=args.resume,
            skip_audit=args.skip_audit,
        )
    except AuditFailed as failure:
        print(failure.report.format())
        print(f"nlp-attn train: error: {failure}", file=sys.stderr)
        return EXIT_AUDIT_FINDINGS
    print(summary)
    return EXIT_OK


def _evaluate(args: argparse.Namespace) -> int:
    from nlp_attn.evaluate import evaluate_run

    print(evaluate_run(args.run, data=args.data, split=args.split, out=args.out))
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    from nlp_attn.predict import predict_command

    if bool(args.texts) == bool(args.input):
        raise NlpAttnError("give either TEXT arguments or --input FILE, not both")
    print(predict_command(args.run, texts=args.texts, input=args.input, json=args.json))
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from nlp_attn.explain import explain_command

    print(explain_command(args.run, args.texts, html=args.html))
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from nlp_attn.export import export_command

    print(export_command(args.run, out=args.out))
    return EXIT_OK


def _audit(args: argparse.Namespace) -> int:
    config = _load_config(args)
    from nlp_attn.train import audit_config

    report = audit_config(config)
    print(report.format())
    return EXIT_OK if report.clean else EXIT_AUDIT_FINDINGS


def _data(args: argparse.Namespace) -> int:
    config = _load_config(args)
    from nlp_attn.data import commands

    print(
        commands.prepare(config) if args.action == "prepare" else commands.stats(config)
    )
    return EXIT_OK


def _quiet_tensorflow(debug: bool) -> None:
    """Keeps TensorFlow's start-up log lines off the user's terminal."""
    if debug:
        return
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def _one_line(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())
