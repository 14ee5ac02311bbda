"""JupyterLab opens a page's percent-format source as a notebook and runs it (`make lab`).

Against a real server: `jupyter lab` (the pinned JupyterLab, with jupytext's server extension
from `jupyterlab_jupytext`) on 127.0.0.1, a random free port and a random token, rooted at the
repository. The test asks the contents API for `notebooks/01_definitions.py` as a notebook, checks
that it comes back as a notebook model with the page's cells (jupytext's contents manager), starts
a kernel, runs the page's `parameters` cell and its imports cell over the kernel's websocket
(Jupyter messaging protocol), reads a value back, and stops the kernel and the server. Every wait
is bounded; the server is terminated in `finally`.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import websocket  # websocket-client, installed with jupyter_server

ROOT = Path(__file__).resolve().parents[1]
PAGE = "notebooks/01_definitions.py"
START_TIMEOUT = 90.0
EXEC_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Api:
    def __init__(self, port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def __call__(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
            return json.loads(text) if text else None


def _wait_until_up(api: _Api, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{proc.stdout.read()[-3000:]}")
        try:
            api("GET", "/api/status", timeout=5)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer within {START_TIMEOUT:.0f} s")


def _execute(ws, code: str, session: str) -> tuple[list[str], dict]:
    """Send one execute_request on the shell channel; collect stdout/results until idle."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    outputs, reply, idle = [], None, False
    deadline = time.monotonic() + EXEC_TIMEOUT
    while not (reply is not None and idle):
        if time.monotonic() > deadline:
            pytest.fail(f"no reply within {EXEC_TIMEOUT:.0f} s to:\n{code[:300]}")
        ws.settimeout(max(1.0, deadline - time.monotonic()))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            outputs.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            outputs.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            outputs.append("\n".join(content["traceback"]))
        elif kind == "execute_reply":
            reply = content
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return outputs, reply


@pytest.mark.slow
def test_lab_opens_a_percent_script_as_a_notebook_and_runs_it(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    lab = Path(sys.executable).with_name("jupyter-lab")
    assert lab.exists(), f"JupyterLab is not installed next to {sys.executable} (requirements.txt pins jupyterlab)"
    env = dict(os.environ, PYTHONPATH=str(ROOT), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               OMP_NUM_THREADS="1")
    # JUPYTER_DATA_DIR must still see the venv's kernelspecs and lab assets: they live under
    # sys.prefix/share/jupyter, which Jupyter always searches.
    proc = subprocess.Popen(
        [str(lab), "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        + (["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    api = _Api(port, token)
    kernel_id = None
    try:
        _wait_until_up(api, proc)

        # 1. the percent script comes back as a notebook model (jupytext's contents manager)
        model = api("GET", f"/api/contents/{PAGE}?type=notebook&content=1")
        assert model["type"] == "notebook" and model["path"] == PAGE
        cells = model["content"]["cells"]
        assert cells[0]["cell_type"] == "markdown" and "# Definitions and the certified run-time defense" in cells[0]["source"]
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, "the page must have exactly one cell tagged parameters"
        i = cells.index(params[0])
        imports = cells[i + 1]
        assert imports["cell_type"] == "code" and "import degradation_lib" in imports["source"]

        # 2. a kernel runs the parameters and imports cells
        kernel_id = api("POST", "/api/kernels", {"name": "python3", "path": "notebooks"})["id"]
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=EXEC_TIMEOUT)
        try:
            session = uuid.uuid4().hex
            for cell in (params[0], imports):
                out, reply = _execute(ws, cell["source"], session)
                assert reply["status"] == "ok", "".join(out)
            out, reply = _execute(ws, "print(eps, device, dl.__name__, ABSTAIN)", session)
            assert reply["status"] == "ok", "".join(out)
            assert "".join(out).split() == ["0.1", "auto", "degradation_lib", "-1"]
        finally:
            ws.close()
    finally:
        if kernel_id is not None:
            try:
                api("DELETE", f"/api/kernels/{kernel_id}", timeout=15)
            except (urllib.error.URLError, OSError):
                pass
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
