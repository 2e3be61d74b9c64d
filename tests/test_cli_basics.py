import sqdist


def test_version(run_cli):
    r = run_cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"sqdist {sqdist.__version__}"


def test_unknown_command_is_one_line_exit_2(run_cli):
    r = run_cli("no-such-command")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr
