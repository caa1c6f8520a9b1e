"""The `knowtune` app and what its commands share: the typer groups, --debug, engine opening, one-line errors."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console
from typer.core import TyperGroup

from knowtune.errors import KnowtuneError
from knowtune.settings import parse_overrides, with_overrides


class _Interrupted(Exception):
    """Ctrl-C during a command, carried past typer (which would turn it into a silent exit 130) to main."""


class _AppGroup(TyperGroup):
    """The top-level group: a KeyboardInterrupt from any command reaches `main` as _Interrupted."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None


app = typer.Typer(
    cls=_AppGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Knowledge-aware fine-tuning of language models."
)
data_app = typer.Typer(no_args_is_help=True, help="List and inspect QA datasets.")
app.add_typer(data_app, name="data")


class _StudyGroup(TyperGroup):
    """`knowtune study`: a name that is no command is an unknown study, answered with the ones there are."""

    def get_command(self, ctx, name: str):
        command = super().get_command(ctx, name)
        if command is None:
            from knowtune.studies.registry import get_study

            get_study(name)  # raises the one-line error naming the registered studies
        return command


study_app = typer.Typer(cls=_StudyGroup, no_args_is_help=True, help="One-command studies reproducing the papers.")
app.add_typer(study_app, name="study")
console = Console()
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


def parse_settings(pairs: list[str]) -> dict:
    """`--set key=value` pairs as a nested dict: dotted keys are sections, values YAML."""
    return with_overrides({}, parse_overrides(pairs))


ENGINE_HELP = "Sampling engine: hf (exact tree sampling, default) or vllm (the knowtune[vllm] extra)."
ENGINE_SET_HELP = ("A vllm engine option, e.g. --engine-set tensor_parallel_size=2 (also gpu_memory_utilization, max_model_len, "
                   "dtype, enforce_eager); the hf engine takes none.")


def open_engine(name: str, pairs: list[str], model: str, dtype: str = "float32", seed: int = 0, trust_remote_code: bool = False,
                probe_fit: tuple | None = None, batch_size: int = 16):
    """The engine `--engine`/`--engine-set` choose on model `model`, and the model's manifest summary; for the hf
    engine `probe_fit` (examples, settings, batch) first refuses a probe that cannot fit in memory."""
    from knowtune.engine import HFTreeEngine, engine_options, vllm_engine

    options = engine_options(name, pairs, dtype)
    if name == "vllm":
        return vllm_engine(model, options, seed, trust_remote_code)
    from knowtune.models import describe, load_model
    from knowtune.probe.slick import check_probe_fits

    loaded = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if probe_fit is not None:
        check_probe_fits(loaded.model, loaded.tokenizer, *probe_fit)
    return HFTreeEngine(loaded.model, loaded.tokenizer, batch_size=batch_size), describe(loaded)


def fail(message: str, code: int) -> NoReturn:
    """Print `message` as one `knowtune: error:` line on stderr and exit with `code`."""
    print("knowtune: error: " + " ".join(message.splitlines()), file=sys.stderr)
    sys.exit(code)


def _kept(argv: list[str]) -> str:
    """What an interrupted resumable command leaves: its --out keeps the finished work."""
    if next((a for a in argv if not a.startswith("-")), "") not in ("probe", "train", "update", "study"):
        return ""
    for i, arg in enumerate(argv):
        out = arg.partition("=")[2] if arg.startswith("--out=") else argv[i + 1] if arg == "--out" and i + 1 < len(argv) else None
        if out:
            return f"; the work finished so far is kept in {out} (run the same command again to resume)"
    return ""


def main() -> None:
    """Entry point: run the app, turning bad input into one line on stderr and a non-zero exit."""
    try:
        # standalone_mode=False: usage errors are raised here instead of printed as a multi-line box
        code = app(standalone_mode=False)
    except KnowtuneError as e:
        if _state["debug"]:
            raise
        fail(str(e), 2)
    except OSError as e:  # a path that cannot be read or written: a file where a directory goes, no permission, disk full
        if _state["debug"]:
            raise
        reason = "exists and is not a directory" if isinstance(e, FileExistsError) else e.strerror
        fail(f"{e.filename}: {reason}" if e.filename and reason else str(e), 1)
    except (KeyboardInterrupt, _Interrupted):
        print(f"knowtune: interrupted{_kept(sys.argv[1:])}", file=sys.stderr)
        sys.exit(130)
    except Exception as e:
        # Click's usage errors (a missing or malformed option): recognised by shape, since newer typer
        # vendors click privately and older typer uses click itself. Anything else is a bug: show it.
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ != "NoArgsIsHelpError":  # for that one typer has printed the help already
            ctx = getattr(e, "ctx", None)
            fail(f"{ctx.command_path}: {e.format_message()}" if ctx else e.format_message(), e.exit_code)
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
