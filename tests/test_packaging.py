"""What a user installs: `python -m build` makes a wheel that installs into a clean venv
and works there; `make run` installs only tether itself."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_installs_into_a_clean_venv_and_works(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"),
                    str(ROOT)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("tether-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "tether/py.typed" in names
    assert {"tether/live/static/tether.js", "tether/live/static/tether.d.ts"} <= set(names)  # the browser client
    assert any(name.startswith("tether/protocol/_mask") and name.endswith(".so") for name in names), names
    assert not any(name.startswith(("tests/", "examples/")) for name in names)
    env_dir = tmp_path / "clean"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Dependencies come from this test run's environment (no network needed); tether itself
    # only from the wheel.
    site = subprocess.run([sys.executable, "-c", "import httptools, os; print(os.path.dirname(os.path.dirname("
                           "httptools.__file__)))"], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True)
    check = (
        "import sys, tether, tether.protocol as p; "
        "assert tether.__file__.startswith(sys.prefix), tether.__file__; "
        "assert p.ACCELERATED; "
        "from tether import App; from tether.testing import TestClient; "
        "app = App(); app.get('/')(lambda: 'hi'); "
        "app.live('/live'); "
        "c = TestClient(app); print(c.get('/').text); "
        "assert 'export class Client' in c.get('/tether.js').text; c.close()"
    )
    out = subprocess.run([python, "-c", check], capture_output=True, text=True, env={"PYTHONPATH": site},
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hi"
    version = subprocess.run([env_dir / "bin" / "tether", "--version"], capture_output=True, text=True,
                             env={"PYTHONPATH": site})
    assert version.stdout.strip() == "tether 0.1.0", version.stderr


def test_make_run_installs_tether_without_the_test_extra(tmp_path):
    plan = subprocess.run(["make", "-n", "-C", str(ROOT), "run", f"VENV={tmp_path / 'v'}"],
                          capture_output=True, text=True, check=True).stdout
    assert "pip install -q -e ." in plan
    assert "[test]" not in plan
