import argparse
import importlib

import pytest
import torch

import sqdist
from sqdist import _cli_broadcast, cli


def test_version(run_cli):
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"sqdist {sqdist.__version__}"


def test_unknown_command_is_one_line_exit_2(run_cli):
    r = run_cli("no-such-command")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------
# What the command line imports: only the chosen sub-command's module, and
# torch only for the commands that compute with it.


SUBCOMMAND_MODULES = {"sqdist.bench", "sqdist._cli_broadcast", "sqdist._cli_kmeans", "sqdist.report"}


@pytest.mark.parametrize("args", [["--help"], ["--version"], []])
def test_top_level_imports_no_torch_and_no_sub_command(run_cli_modules, args):
    r, imported = run_cli_modules(*args)
    assert "sqdist.cli" in imported
    assert not {"torch", "numpy", "sklearn"} & imported
    assert not SUBCOMMAND_MODULES & imported
    if args == ["--help"]:
        assert r.returncode == 0
        for name, (_module, help_) in cli.COMMANDS.items():
            assert name in r.stdout and help_.split()[0] in r.stdout
    elif args == ["--version"]:
        assert r.returncode == 0 and r.stdout.strip() == f"sqdist {sqdist.__version__}"
    else:  # no command: the help on stderr, exit 2
        assert r.returncode == 2 and "COMMAND" in r.stderr


def test_only_the_chosen_sub_command_is_imported(run_cli_modules):
    r, imported = run_cli_modules("broadcast", "--help")
    assert r.returncode == 0 and "--exercise" in r.stdout
    assert SUBCOMMAND_MODULES & imported == {"sqdist._cli_broadcast"}
    assert "torch" not in imported


@pytest.mark.parametrize("argv,expected", [
    (["broadcast", "(3,)"], "broadcast"),
    (["--version"], None),
    (["-h", "kmeans", "--data", "report"], "kmeans"),  # the first word, not a later one
    (["report", "--out", "bench"], "report"),
    (["no-such-command", "bench"], None),
    ([], None),
])
def test_chosen_command(argv, expected):
    assert cli.chosen_command(argv) == expected


def test_torch_out_of_memory_error_is_looked_up_only_once_torch_is_loaded(run_python):
    r = run_python("import sys\nimport sqdist.cli as c\nprint(c._out_of_memory_errors() == (MemoryError,), "
                   "'torch' in sys.modules)")
    assert r.returncode == 0 and r.stdout.split() == ["True", "False"], r.stderr
    # in this process torch is loaded (the tests import it): its OOM error is caught too
    assert torch.OutOfMemoryError in cli._out_of_memory_errors()


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore"),
                                 MemoryError()])
def test_out_of_memory_is_one_line_exit_2(monkeypatch, capsys, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(_cli_broadcast, "run", boom)
    assert cli.main(["broadcast", "(3,)"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sqdist broadcast: error: out of memory (")
    assert "--working-memory" in err[0]


# ---------------------------------------------------------------------------
# Every option of every sub-command says what it does


def _parsers(parser: argparse.ArgumentParser, path: str = "sqdist"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_option_has_help_text():
    parser = cli.build_parser()  # every sub-command configured
    walked = dict(_parsers(parser))
    assert set(walked) == {"sqdist"} | {f"sqdist {name}" for name in cli.COMMANDS}
    missing = []
    for path, p in walked.items():
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {name}")
            if isinstance(action, argparse._SubParsersAction):  # each command's line in `sqdist --help`
                missing += [f"{path} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
    assert missing == []
    # the sub-command parsers have their options (the walk saw real parsers, not the --help stubs)
    assert len(walked["sqdist broadcast"]._actions) >= 4 and len(walked["sqdist kmeans"]._actions) > 5


# ---------------------------------------------------------------------------
# The package's public names load on first use (PEP 562)


def test_import_sqdist_is_light(run_python):
    r = run_python("import sys, sqdist\nprint(*(m in sys.modules for m in ('torch', 'numpy', 'sklearn')))")
    assert r.returncode == 0 and r.stdout.split() == ["False", "False", "False"], r.stderr


def test_every_public_name_resolves_to_its_module():
    assert sorted(sqdist.__all__) == sorted(set(sqdist.__all__)) and set(sqdist.__all__) <= set(dir(sqdist))
    for name in sqdist.__all__:
        value = getattr(sqdist, name)
        module = sqdist._LAZY.get(name)
        if module is not None:  # the object its module defines, not a copy
            mod = importlib.import_module(f"sqdist.{module}")
            assert value is (mod if module == name else getattr(mod, name)), name
    # every lazy name is public, and unknown names are still AttributeErrors
    assert set(sqdist._LAZY) <= set(sqdist.__all__)
    assert not hasattr(sqdist, "no_such_name")
    assert sqdist.SqdistError is sqdist._validation.SqdistError and issubclass(sqdist.BroadcastError, sqdist.SqdistError)
