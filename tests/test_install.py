"""Fitting into an environment: declared dependencies, the detectron2 check at import, quiet
start-up, `pip install -e .` into an environment that has everything, and setup_env.sh keeping
an existing detectron2's torch."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import INSTANT as INSTANT_CONFIG
from tests.conftest import REPO

# Code whose imports users need: the package, the tools and the entry points.
SOURCES = ["longtail_d2", "tools", "train_net.py", "projects"]
FIRST_PARTY = {"longtail_d2", "tests", "tools"}
# detectron2 is not on PyPI: setup.py cannot name it (import longtail_d2 checks it instead).
NOT_DECLARABLE = {"detectron2"}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules():
    """Top-level third-party module names imported anywhere in SOURCES (including imports
    inside functions), with a file that imports each."""
    found = {}
    for source in SOURCES:
        path = os.path.join(REPO, source)
        files = [path] if path.endswith(".py") else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py")
        ]
        for file in files:
            with open(file) as f:
                tree = ast.parse(f.read(), file)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, os.path.relpath(file, REPO))
    return found


def install_requires():
    """Distribution names in setup.py's install_requires (read with ast, not executed)."""
    with open(os.path.join(REPO, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            specs = ast.literal_eval(node.value)
            return {canonical(re.split(r"[<>=!~ ;\[]", s)[0]) for s in specs}
    raise AssertionError("setup.py has no install_requires")


def test_setup_py_declares_every_third_party_import():
    modules = imported_modules()
    assert {"torch", "numpy", "sklearn", "PIL"} <= set(modules)  # the scan sees real imports
    # Which distribution provides each module, from the installed environment's metadata.
    providers = importlib.metadata.packages_distributions()
    declared = install_requires()
    missing = []
    for module, file in sorted(modules.items()):
        if module in NOT_DECLARABLE:
            continue
        assert module in providers, f"{module} (imported by {file}) is not installed"
        if not any(canonical(d) in declared for d in providers[module]):
            missing.append(f"{module} ({'/'.join(providers[module])}, imported by {file})")
    assert not missing, "setup.py install_requires lacks: " + ", ".join(missing)


def test_requirements_txt_pins_every_declared_package():
    with open(os.path.join(REPO, "requirements.txt")) as f:
        lines = [line for line in f if "==" in line and not line.startswith("#")]
    pinned = {canonical(line.split("==")[0]) for line in lines}
    with open(os.path.join(REPO, "tools", "setup_env.sh")) as f:
        script = f.read()
    for name in install_requires():
        if name == "torch":  # pinned by setup_env.sh, kept as is in an existing environment
            assert "torch==2.14.1" in script
        else:
            assert name in pinned, f"{name} is in setup.py but not pinned in requirements.txt"


def run_python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=REPO
    )


def test_too_old_detectron2_is_one_line_import_error():
    """A detectron2 without the 2022 features (as v0.6) fails with the version and what lacks.
    Without the check, the import dies in federated.py with an AttributeError instead."""
    proc = run_python(
        """
        from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
        del FastRCNNOutputLayers.get_fed_loss_classes  # as in detectron2 v0.6
        import longtail_d2
        """
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: longtail_d2 needs detectron2 from its main branch, 2022")
    assert "lacks FastRCNNOutputLayers.get_fed_loss_classes" in last
    assert "found detectron2 " in last and "site-packages" in last


def test_missing_detectron2_is_one_line_import_error():
    proc = run_python(
        """
        import sys
        sys.modules["detectron2"] = None  # not installed
        import longtail_d2
        """
    )
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: longtail_d2 needs detectron2") and "README" in last


NOISY = """
import torch
{first}
import detectron2.engine, detectron2.modeling, detectron2.utils.collect_env
from detectron2.utils.tracing import is_fx_tracing
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
is_fx_tracing()
gen = DefaultAnchorGenerator(sizes=[[32]], aspect_ratios=[[1.0]], strides=[8])
gen([torch.zeros(1, 4, 3, 3)])
"""


def test_import_silences_third_party_start_up_noise():
    """detectron2 + torch print deprecation noise at import and first use; importing
    longtail_d2 first leaves stderr empty. (The noise is checked to exist without it.)"""
    noisy = run_python(NOISY.format(first=""))
    assert noisy.returncode == 0, noisy.stderr
    if "torch.jit.script" not in noisy.stderr:
        pytest.skip("this torch prints no torch.jit.script deprecation")
    quiet = run_python(NOISY.format(first="import longtail_d2"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_train_net_start_up_is_quiet():
    """``train_net.py`` imports longtail_d2 before detectron2, so even its start-up (``--help``
    imports everything) prints nothing on stderr. (With longtail_d2 imported after detectron2,
    this torch prints two ``torch.jit.script`` FutureWarnings here.)"""
    proc = subprocess.run(
        [sys.executable, "train_net.py", "--help"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_pip_install_editable_into_this_environment_installs_only_longtail_d2(tmp_path):
    """`pip install -e .` resolved offline against this environment (which has detectron2 and
    everything else): nothing but longtail_d2 itself would be installed, torch is kept."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
         "--no-build-isolation", "-q", "--report", str(report), "-e", REPO],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
    assert installs == ["longtail_d2"]


FAKE_PYTHON = """#!/bin/bash
# Stands in for an environment's python: logs each call; imports succeed when $STATE/d2 exists.
echo "$*" >> "$STATE/calls"
case "$*" in
  *"sal-detectron2"*) touch "$STATE/d2"; exit 0 ;;
  "-m pip"*) exit 0 ;;
  *"print(torch.__version__)"*) echo 2.3.1+cu121; exit 0 ;;
  *"sysconfig"*) echo "$STATE/site"; exit 0 ;;
  *"import detectron2"*) [ -e "$STATE/d2" ] ;;
  *"import torch"*) exit 1 ;;
  *) exit 0 ;;
esac
"""


def run_setup_env(tmp_path, detectron2_present):
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    if detectron2_present:
        (state / "d2").touch()
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "tools", "setup_env.sh")],
        capture_output=True, text=True,
        env=dict(os.environ, LONGTAIL_VENV=str(venv), STATE=str(state)),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, (state / "calls").read_text()


def test_setup_env_keeps_the_torch_of_an_existing_detectron2(tmp_path):
    stdout, calls = run_setup_env(tmp_path, detectron2_present=True)
    assert "detectron2 already imports: keeping torch 2.3.1+cu121" in stdout
    assert "torch==" not in calls and "sal-detectron2" not in calls
    assert "-r requirements.txt" in calls and "-e ." in calls


def test_setup_env_installs_torch_and_detectron2_in_a_fresh_environment(tmp_path):
    stdout, calls = run_setup_env(tmp_path, detectron2_present=False)
    assert "keeping torch" not in stdout
    assert "torch==2.14.1 torchvision==0.29.1" in calls and "sal-detectron2==0.7.2" in calls


def test_cpu_fallback_warning_is_logged_once_per_process():
    """train_net.py loads the config twice in one process (before and after launch)."""
    proc = run_python(
        f"""
        import torch
        torch.cuda.is_available = lambda: False  # as on a machine without a GPU
        from longtail_d2.engine import load_config
        for _ in range(2):
            assert load_config({INSTANT_CONFIG!r}, ["MODEL.DEVICE", "cuda"]).MODEL.DEVICE == "cpu"
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("no GPU is visible: using the CPU") == 1, proc.stderr
