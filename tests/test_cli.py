import json
import subprocess
import sys

from dodai import roadmap
from dodai.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "dodai", *args], capture_output=True, text=True)


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("roadmap", "models"):
        assert cmd in r.stdout


def test_roadmap_json_covers_every_item():
    r = run_cli("roadmap", "--json")
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)
    ids = [it["id"] for it in items]
    expected = [f"R1.{i}" for i in range(1, 6)] + [f"R2.{i}" for i in range(1, 5)]
    expected += [f"R3.{i}" for i in range(1, 5)] + [f"R4.{i}" for i in range(1, 7)]
    expected += [f"R5.{i}" for i in range(1, 6)] + [f"R6.{i}" for i in range(1, 6)]
    expected += [f"R7.{i}" for i in range(1, 6)] + [f"R8.{i}" for i in range(1, 4)]
    expected += [f"R9.{i}" for i in range(1, 4)]
    assert ids == expected
    for it in items:
        assert it["status"] in ("working", "failing", "unverified", "planned")
        assert it["command"].startswith("dodai")
        assert it["ja"] and it["en"]


def test_working_items_have_their_experiment_or_command():
    from dodai.experiments import EXPERIMENTS

    for it in roadmap.ITEMS:
        if it.command.startswith("dodai roadmap run"):
            assert it.id in EXPERIMENTS, f"{it.id}'s command runs an experiment that is not registered"
        if it.status == roadmap.WORKING:
            assert it.id in EXPERIMENTS, f"{it.id} is working but has no experiment"


def test_unknown_item_is_one_line_error(capsys):
    assert main(["roadmap", "run", "R0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dodai: error:") and "\n" not in err


def test_unknown_model_is_one_line_error(capsys):
    assert main(["models", "pull", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown model" in err and "\n" not in err
