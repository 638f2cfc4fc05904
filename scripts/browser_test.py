"""What a student does, in a real browser: `make browser-test`.

nbmake and `make lessons` run the lessons without a front end, so they never see a widget: an
explorer that renders as "Error displaying widget", or whose slider does nothing, passes them.
This script starts JupyterLab (no token, on 127.0.0.1, a free port) on a temporary copy of the
lessons (FTLAB_PROFILE=tiny, offline, one torch thread), and for each lesson it opens it in
headless Chromium (driven by selenium and Debian's chromedriver), picks Run > Run All Cells from
the menu, waits until every code cell has run and the kernel is idle, moves the first slider of
the lesson's explorer one step with the arrow keys, and checks that:

- every code cell ran, and none shows an error (an ``error`` output, or a traceback on stderr);
- the explorer's output changed after the slider moved (and the slider's readout did);
- no widget shows "Error displaying widget", and no explorer output holds a traceback.

A screenshot of each lesson, scrolled to its explorer, goes to build/browser/NN_topic.png (and
NN_topic_failed.png when it fails). Every wait is bounded and the whole run has a deadline
(--timeout); any failure exits 1 with one line saying what went wrong. JupyterLab, its kernels,
chromedriver and Chromium are stopped at the end whatever happens. The repository's notebooks
are never written to.

Needs jupyterlab and selenium in the venv (the Makefile target installs them) and the
``chromium`` and ``chromium-driver`` Debian packages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ("07_memory_budget", "02_lora_from_scratch")
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

# JupyterLab settings for the run: every cell in the page (no windowing, so each output can be
# read), and no requests to the news feed (offline) nor its pop-up.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


class Failure(Exception):
    """What went wrong, in one line for the student or CI log."""


# -- the page's state, read through JupyterLab's own objects (LabApp.expose_app_in_browser) --------

STATE_JS = """
const path = arguments[0];
const app = window.jupyterapp;
if (!app || !app.shell) return {ready: false, why: "JupyterLab has not started in the page"};
const panel = Array.from(app.shell.widgets("main")).find(w => w.context && w.context.path === path);
if (!panel) return {ready: false, why: "the notebook is not open"};
if (!panel.context.isReady) return {ready: false, why: "the notebook is loading"};
const session = panel.sessionContext;
const kernel = session.session && session.session.kernel;
const dialog = document.querySelector(".jp-Dialog");
const cells = [];
panel.content.widgets.forEach((cell, index) => {
  if (cell.model.type !== "code") return;
  const source = cell.model.sharedModel.getSource();
  if (!source.trim()) return;
  const outputs = cell.model.outputs.toJSON().map(o => ({
    type: o.output_type, name: o.name || null, ename: o.ename || null, evalue: o.evalue || null,
    text: typeof o.text === "string" ? o.text : (o.text || []).join("")}));
  cells.push({index, count: cell.model.executionCount, prompt: cell.promptNode ? cell.promptNode.textContent : "",
              head: source.split("\\n")[0].slice(0, 80), outputs});
});
return {ready: true, kernel: kernel ? kernel.status : null, connection: kernel ? kernel.connectionStatus : null,
        dialog: dialog ? dialog.innerText.slice(0, 400) : null, cells};
"""

# The explorers (ipywidgets.interactive: a VBox with class widget-interact), their sliders and
# outputs, and what the page shows that looks like an error.
WIDGETS_JS = """
const explorers = Array.from(document.querySelectorAll(".widget-interact"));
const tracebacks = Array.from(document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.innerText).filter(t => /Traceback|Error:/.test(t)).map(t => t.slice(-4000));
const broken = document.body.innerText.includes("Error displaying widget");
return {
  explorers: explorers.map(x => ({
    sliders: x.querySelectorAll(".widget-slider").length,
    output: (x.querySelector(".widget-output") || {innerText: ""}).innerText,
    images: x.querySelectorAll(".widget-output img").length})),
  tracebacks, broken};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, check, deadline: float, limit: float, poll: float = 0.5):
    """Call ``check()`` until it returns something true; Failure after ``limit`` seconds (or at the
    run's ``deadline``), naming ``what`` was awaited. ``check`` may raise Failure to stop at once."""
    end = min(time.monotonic() + limit, deadline)
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > end:
            if end == deadline:
                raise Failure(f"the whole run's time (--timeout) ran out while waiting for {what}")
            raise Failure(f"timed out after {limit:.0f} s waiting for {what}")
        time.sleep(poll)


class Lab:
    """JupyterLab on a temporary copy of the lessons; ``stop()`` ends it and its kernels."""

    def __init__(self, workdir: Path, port: int, log: Path):
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "JUPYTER_TOKEN")}
        env.update(OFFLINE, FTLAB_PROFILE="tiny", OMP_NUM_THREADS="1", PIP_NO_INPUT="1",
                   JUPYTER_CONFIG_DIR=str(workdir / "config"), JUPYTER_DATA_DIR=str(workdir / "data"),
                   JUPYTER_RUNTIME_DIR=str(workdir / "runtime"), IPYTHONDIR=str(workdir / "ipython"))
        settings = workdir / "settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        self.log = log
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
             f"--ServerApp.root_dir={workdir / 'notebooks'}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
             "--LabApp.news_url=", "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
             "--ServerApp.allow_root=True"],
            cwd=workdir, env=env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as reply:
            body = reply.read()
        return json.loads(body) if body else None

    def wait_ready(self, deadline: float):
        def up():
            if self.proc.poll() is not None:
                raise Failure(f"JupyterLab exited with code {self.proc.returncode}: see {self.log}")
            try:
                return self.api("/api/status") is not None
            except OSError:
                return False
        wait("JupyterLab to answer on " + self.url, up, deadline, limit=120)

    def stop(self):
        """Shut the kernels down through the API, then end the server's process group; any kernel
        still alive after that (they run in sessions of their own) is ended by its process id."""
        kernels = []
        if self.proc.poll() is None:
            try:
                for kernel in self.api("/api/kernels"):
                    kernels.append(kernel["id"])
                    self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
            except OSError:
                pass
        children = [pid for pid in _children(self.proc.pid)]
        for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if self.proc.poll() is not None:
                break
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log_file.close()


def _children(pid: int) -> list[int]:
    """The ids of the processes whose parent is ``pid`` (the server's kernels), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def browser(chromium: str, chromedriver: str, width: int = 1500, height: int = 1100):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    # the path is given, so selenium never looks for (or downloads) a driver of its own
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    return driver


def errors_in(state: dict) -> list[str]:
    """Each code cell's error outputs (``error``, or a traceback on stderr), as lines."""
    found = []
    for cell in state["cells"]:
        for out in cell["outputs"]:
            if out["type"] == "error":
                found.append(f"cell {cell['index']} ({cell['head']!r}): {out['ename']}: {out['evalue']}")
            elif out["type"] == "stream" and out["name"] == "stderr" and "Traceback" in out["text"]:
                found.append(f"cell {cell['index']} ({cell['head']!r}): a traceback on stderr: "
                             + last_line(out["text"]))
    return found


def last_line(text: str) -> str:
    """The last non-empty line of a traceback: the error and its message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_lesson(driver, lab: Lab, name: str, shots: Path, deadline: float, cell_limit: float) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    path = f"{name}.ipynb"
    started = time.monotonic()
    driver.get(f"{lab.url}/lab/tree/{path}")

    def state():
        return driver.execute_script(STATE_JS, path)

    def kernel_idle():
        s = state()
        if s.get("dialog"):
            raise Failure(f"{name}: a dialog is in the way: {s['dialog']!r}")
        return s if s.get("ready") and s["kernel"] == "idle" and s["connection"] == "connected" else None

    wait(f"{name} to open with its kernel idle", kernel_idle, deadline, limit=180)

    # Run > Run All Cells, as a student would
    menu = wait("the Run menu", lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                                         if e.text.strip() == "Run"], deadline, limit=30)
    menu[0].click()
    item = wait("Run All Cells in the Run menu", lambda: [
        e for e in driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item .lm-Menu-itemLabel")
        if e.text.strip() == "Run All Cells"], deadline, limit=30)
    item[0].click()

    def finished():
        s = state()
        if s.get("dialog"):
            raise Failure(f"{name}: a dialog is in the way: {s['dialog']!r}")
        if s["kernel"] in ("dead", "unknown") or s["connection"] == "disconnected":
            raise Failure(f"{name}: the kernel died (status {s['kernel']}, {s['connection']})")
        bad = errors_in(s)
        if bad:
            raise Failure(f"{name}: a cell failed: {bad[0]}")
        done = s["kernel"] == "idle" and all(c["count"] is not None and "*" not in c["prompt"] for c in s["cells"])
        return s if done else None

    # two idle readings a second apart: the kernel may not have gone busy yet just after the click
    final = wait(f"every cell of {name} to run", lambda: finished() and (time.sleep(1.0) or finished()),
                 deadline, limit=cell_limit, poll=1.0)
    ran_s = time.monotonic() - started

    seen = wait(f"{name}'s explorer to render", lambda: _explorers_shown(driver), deadline, limit=60)
    explorer = seen[0]
    before = driver.execute_script(WIDGETS_JS)["explorers"][0]["output"]
    if not before.strip():
        raise Failure(f"{name}: the explorer's output is empty before the slider moved")

    slider = explorer.find_elements(By.CSS_SELECTOR, ".widget-slider")[0]
    handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle, .ui-slider-handle")
    readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
    label = slider.find_element(By.CSS_SELECTOR, ".widget-label").text
    old_readout = readout.text
    at_max = handle.get_attribute("aria-valuenow") == handle.get_attribute("aria-valuemax")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer)
    handle.send_keys(Keys.ARROW_LEFT if at_max else Keys.ARROW_RIGHT)

    wait(f"{name}: the {label!r} slider's readout to change from {old_readout!r}",
         lambda: readout.text != old_readout, deadline, limit=20)

    def changed():
        w = driver.execute_script(WIDGETS_JS)
        after = w["explorers"][0]["output"]
        s = kernel_idle()
        return after if s and after.strip() and after != before else None

    after = wait(f"{name}'s explorer output to change after moving {label!r} "
                 f"({old_readout!r} -> {readout.text!r})", changed, deadline, limit=90)
    time.sleep(1.0)                                 # let the output settle and the plot draw
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer)
    shot = shots / f"{name}.png"
    driver.save_screenshot(str(shot))

    final = state()
    bad = errors_in(final)
    w = driver.execute_script(WIDGETS_JS)
    if bad:
        raise Failure(f"{name}: a cell failed: {bad[0]}")
    if w["broken"]:
        raise Failure(f"{name}: a widget shows 'Error displaying widget' (see {shot})")
    if w["tracebacks"]:
        raise Failure(f"{name}: an output shows a traceback (see {shot}): {last_line(w['tracebacks'][0])}")
    return {"lesson": name, "cells": len(final["cells"]), "run_all_s": round(ran_s, 1),
            "slider": label, "moved": f"{old_readout} -> {readout.text}",
            "output_before": before.splitlines()[0][:90], "output_after": after.splitlines()[0][:90],
            "screenshot": str(shot.relative_to(ROOT) if shot.is_relative_to(ROOT) else shot)}


def _explorers_shown(driver):
    from selenium.webdriver.common.by import By

    w = driver.execute_script(WIDGETS_JS)
    if w["broken"]:
        raise Failure("a widget shows 'Error displaying widget'")
    shown = driver.find_elements(By.CSS_SELECTOR, ".widget-interact")
    return shown if shown and w["explorers"][0]["sliders"] and w["explorers"][0]["output"].strip() else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", default=list(LESSONS), help="lesson names (default: %(default)s)")
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "browser", help="where screenshots go")
    parser.add_argument("--timeout", type=float, default=480, help="seconds for the whole run")
    parser.add_argument("--cell-timeout", type=float, default=300,
                        help="seconds Run All Cells may take in one lesson")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM") or shutil.which("chromium"))
    parser.add_argument("--chromedriver", default=os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver"))
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    deadline = t0 + args.timeout
    missing = [what for what, found in (("chromium", args.chromium), ("chromedriver", args.chromedriver))
               if not found]
    if missing:
        print(f"browser-test: {' and '.join(missing)} not found: install the Debian packages "
              "(apt-get install -y chromium chromium-driver) or pass --chromium/--chromedriver")
        return 1
    try:
        import jupyterlab  # noqa: F401
        import selenium  # noqa: F401
    except ImportError as err:
        print(f"browser-test: {err.name} is not installed in {sys.prefix}: run `make browser-test`, "
              "which installs jupyterlab and selenium")
        return 1
    lessons = [Path(n).stem for n in args.lessons]
    for name in lessons:
        if not (args.notebooks / f"{name}.ipynb").exists():
            print(f"browser-test: no {args.notebooks / name}.ipynb (run make sync to pair the .py twins)")
            return 1

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ftlab_browser_"))
    (workdir / "notebooks").mkdir()
    for name in lessons:
        shutil.copy2(args.notebooks / f"{name}.ipynb", workdir / "notebooks")
    log = args.out / "jupyterlab.log"
    lab = driver = None
    results, current, code = [], None, 0
    try:
        lab = Lab(workdir, free_port(), log)
        lab.wait_ready(deadline)
        driver = browser(args.chromium, args.chromedriver)
        for name in lessons:
            current = name
            result = run_lesson(driver, lab, name, args.out, deadline, args.cell_timeout)
            results.append(result)
            print(f"browser-test: {name}: {result['cells']} code cells ran in {result['run_all_s']} s, "
                  f"moved {result['slider']!r} {result['moved']}, the explorer's output changed; "
                  f"screenshot {result['screenshot']}", flush=True)
    except Exception as err:  # a failure of any kind ends the run with one line and a screenshot
        code = 1
        where = f"{current}: " if current and not str(err).startswith(current) else ""
        print(f"browser-test: FAILED: {where}{err if isinstance(err, Failure) else repr(err)}")
        if driver is not None and current:
            try:
                driver.save_screenshot(str(args.out / f"{current}_failed.png"))
                print(f"browser-test: screenshot of the failure: {args.out / f'{current}_failed.png'}")
            except Exception:
                pass
        if lab is not None:
            print(f"browser-test: JupyterLab's log: {log}")
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        if lab is not None:
            lab.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    (args.out / "summary.json").write_text(json.dumps({"passed": code == 0, "results": results,
                                                      "seconds": round(time.monotonic() - t0, 1)}, indent=1))
    if code == 0:
        print(f"browser-test: {len(results)} lessons passed in {time.monotonic() - t0:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
