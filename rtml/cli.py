"""rtml's command-line front door.

Only argument parsing lives here; every command imports its implementation lazily, so
``rtml --help`` is instant and a command pays only for what it uses. Results go to stdout
(``--json`` keeps it machine-readable); progress bars and logs go to stderr. Bad
arguments and domain errors end in one ``rtml: error: ...`` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("rtml")

EXIT_FAILURE = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (argparse prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"rtml: error: {message} (see '{self.prog} --help')\n")


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}: {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return value


def _emit(result: dict[str, Any], as_json: bool) -> None:
    """Print a command's result on stdout: one JSON object, or aligned key: value lines."""
    if as_json:
        print(json.dumps(result, default=str))
        return
    width = max((len(k) for k in result), default=0)
    for key, value in result.items():
        shown = json.dumps(value, default=str) if isinstance(value, dict | list) else value
        print(f"{key:<{width}}  {shown}")


def _progress(total: int, desc: str) -> Any:
    """A progress bar on stderr (hidden when stderr is not a terminal, e.g. in CI logs)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, disable=None, leave=False)


# --- simulate ---------------------------------------------------------------------------


def _add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="generate the handbook's simulated card transactions as day-partitioned Parquet",
        description=(
            "Simulate card transactions and the three fraud scenarios of the Fraud Detection "
            "Handbook. The defaults are the book's parameters (about 1.75 million "
            "transactions). Same arguments, same bytes."
        ),
    )
    p.add_argument("--customers", type=_positive_int, default=5000, help="number of customers")
    p.add_argument("--terminals", type=_positive_int, default=10000, help="number of terminals")
    p.add_argument("--days", type=_positive_int, default=183, help="number of days")
    p.add_argument("--start-date", type=_iso_date, default=date(2018, 4, 1), help="first day")
    p.add_argument("--radius", type=_positive_float, default=5.0, help="terminal reach")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> None:
    from models import datasets, simulator

    config = simulator.SimulationConfig(
        n_customers=args.customers,
        n_terminals=args.terminals,
        nb_days=args.days,
        start_date=args.start_date,
        radius=args.radius,
        seed=args.seed,
    )
    with _progress(simulator.work_units(config), "simulate") as bar:
        tx = simulator.simulate(config, progress=bar.update)
    summary = simulator.summarize(tx, config)
    files = datasets.write_dataset(tx.to_arrow(), args.out, summary)
    log.info("wrote %d day partitions to %s", files, args.out)
    _emit({"out": str(args.out), "files": files, **summary.model_dump(mode="json")}, args.json)


# --- features ---------------------------------------------------------------------------


def _add_features(sub: Any) -> None:
    p = sub.add_parser(
        "features",
        help="compute the feature table of a simulated dataset (offline or online engine)",
        description=(
            "Compute the baseline features (the handbook's 14, plus TX_AMOUNT) for every "
            "transaction and write them, with the transaction columns, as day-partitioned "
            "Parquet. --engine offline is vectorized over the whole history; --engine online "
            "replays the history event by event through the online state machine (labels "
            "delivered 7 days late) and must give the same numbers."
        ),
    )
    p.add_argument("--in", dest="src", type=Path, required=True, help="simulated dataset")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--engine", choices=("offline", "online"), default="offline")
    p.add_argument(
        "--store",
        choices=("memory", "dynamodb"),
        default="memory",
        help="online state store (dynamodb: AWS_ENDPOINT_URL / credentials; small runs)",
    )
    p.add_argument("--table", default=None, help="DynamoDB table name (with --store dynamodb)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_features)


def _run_features(args: argparse.Namespace) -> None:
    import time

    from models import datasets
    from models.contracts import TRANSACTIONS_COLUMNS
    from models.features import table as feature_table

    transactions = datasets.read_dataset(args.src, TRANSACTIONS_COLUMNS)
    if transactions.num_rows == 0:
        raise ValueError(f"{args.src} holds no transactions")
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if args.engine == "offline":
        from models.features.offline import compute_features

        features = compute_features(transactions)
    else:
        from models.features.replay import replay_history

        with _progress(2 * transactions.num_rows, "online replay") as bar:
            result = replay_history(
                transactions, store=args.store, table_name=args.table, progress=bar.update
            )
        features, extra = result.features, result.counters
    elapsed = time.perf_counter() - started
    out_table = feature_table.feature_table(transactions, features)
    summary = feature_table.FeatureTableSummary(
        engine=args.engine,
        source=str(args.src),
        n_rows=out_table.num_rows,
        features=list(features),
        seconds=round(elapsed, 3),
        counters=extra,
    )
    files = datasets.write_dataset(out_table, args.out, summary)
    log.info("wrote %d day partitions to %s", files, args.out)
    _emit({"out": str(args.out), "files": files, **summary.model_dump(mode="json")}, args.json)


# --- entry point ------------------------------------------------------------------------

COMMANDS: tuple[Callable[[Any], None], ...] = (_add_simulate, _add_features)


def build_parser() -> argparse.ArgumentParser:
    """The full parser (tests use it to check every command has --help)."""
    parser = _Parser(
        prog="rtml",
        description="rtml: real-time ML on AWS serverless (simulate, features, train, serve).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    from models.errors import RtmlError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        sys.stderr.close()
        return 0
    except (ValueError, OSError, RtmlError) as exc:
        # Domain errors (pydantic's ValidationError is a ValueError) end in one line.
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"rtml: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


if __name__ == "__main__":
    sys.exit(main())
