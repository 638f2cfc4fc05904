"""The Colab first cell, rehearsed (``make rehearse-colab``).

A student opens a lesson on a Colab GPU runtime and runs its set-up cell: pip installs
``ftlab[quant]`` into Colab's preinstalled Python set, keeping Colab's torch. This script plays
that out here, from scratch:

1. a fresh venv, ``build/colab-venv/``, holding Colab's preinstalled set as listed in
   ``scripts/colab_preinstalled.txt`` (transformers, peft, ipywidgets 7, ipykernel ...), with
   torch==2.14.1 and torchvision==0.29.1 standing for Colab's own torch;
2. a stand-in ``google.colab`` (``scripts/colab_stub/``) on that venv's path, imported when each
   kernel starts (an IPython startup file), so a set-up cell sees ``"google.colab" in
   sys.modules`` and takes its Colab branch;
3. a wheel of this checkout (``build/colab-wheel/``); ``FTLAB_INSTALL`` points the set-up cell's
   install line at it, ``ftlab[quant] @ file://.../ftlab-<version>-py3-none-any.whl``;
4. lessons 00 and 04 executed top to bottom in that venv's kernel, so their real set-up cell runs
   the real ``pip install`` against Colab's set (and PyPI, for what Colab lacks: trl,
   bitsandbytes ...). Lesson 00 makes the first install; 04 runs its set-up cell again on the same
   runtime, as a student who opens another lesson without a new runtime would. Profile ``full``
   with the hub stand-ins (scripts/rehearse.py) on a simulated T4, ``FTLAB_MAX_STEPS=2``;
5. a check notebook in the same kernel set-up: ftlab is the wheel's version and imports from the
   venv, not the checkout; torch and torchvision are untouched; bitsandbytes and trl import;
   ipywidgets is still Colab's 7.x and every explorer of ftlab.widgets builds and displays.

It prints a table (lesson, seconds, status), the versions of the key libraries before and after
the set-up cell, and the checks, and writes them with the timings of each step to
``build/colab-rehearsal/summary.md`` (executed notebooks and logs beside it). Exit status 1 if a
check or a lesson failed.

    python scripts/colab_rehearsal.py                  # lessons 00 and 04, full profile, T4
    python scripts/colab_rehearsal.py 00 --profile tiny
    python scripts/colab_rehearsal.py --reuse-venv     # keep build/colab-venv/ (NOT a first install)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
VENV = BUILD / "colab-venv"
WHEELS = BUILD / "colab-wheel"
OUT = BUILD / "colab-rehearsal"
STANDINS = BUILD / "standins"
PREINSTALLED = ROOT / "scripts" / "colab_preinstalled.txt"
STUB = ROOT / "scripts" / "colab_stub"
# What stands for Colab's own torch: the set-up cell must leave these exactly as they are.
KEPT = {"torch": "2.14.1", "torchvision": "0.29.1"}
KEY_LIBS = ("torch", "torchvision", "transformers", "tokenizers", "safetensors", "huggingface-hub",
            "accelerate", "peft", "datasets", "trl", "bitsandbytes", "numpy", "matplotlib", "ipywidgets",
            "ipykernel", "ftlab")
CHECK_PREFIX = "COLAB_CHECK "


# --- the venv --------------------------------------------------------------------------------------


def preinstalled(path: Path = PREINSTALLED) -> list[str]:
    """The requirement lines of ``colab_preinstalled.txt`` (comments and blank lines dropped)."""
    reqs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


def run_logged(cmd: list[str], log: Path, **kw) -> None:
    """Run ``cmd`` with its output in ``log``; on failure show the log's tail and stop."""
    with log.open("a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw)
    if result.returncode != 0:
        lines = [ln for ln in log.read_text().splitlines() if not ln.startswith("WARNING: Location")]
        print("\n".join(lines[-40:]))
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}; see {log}")


def venv_python(venv: Path = VENV) -> Path:
    return venv / "bin" / "python"


def create_venv(venv: Path, python: str, log: Path) -> None:
    """A fresh venv with Colab's preinstalled set and the kept torch."""
    if venv.exists():
        shutil.rmtree(venv)
    run_logged([python, "-m", "venv", str(venv)], log)
    py = str(venv_python(venv))
    reqs = preinstalled()
    pips = [r for r in reqs if r.replace(" ", "").startswith("pip==")]
    pip = [py, "-m", "pip", "install", "--progress-bar", "off", "--no-input"]
    if pips:
        run_logged(pip + pips, log)
    rest = [r for r in reqs if r not in pips]
    run_logged(pip + [f"{k}=={v}" for k, v in KEPT.items()] + rest, log)


def install_stub(venv: Path) -> Path:
    """Put scripts/colab_stub on the venv's path and import google.colab at every kernel start.
    Returns the IPYTHONDIR that holds the startup file (the kernels must get it)."""
    purelib = subprocess.run([str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "ftlab-colab-stub.pth").write_text(str(STUB) + "\n")
    ipython_dir = venv / "ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-google-colab.py").write_text(
        "# Colab's kernel imports google.colab at start; the rehearsal's stand-in does the same.\n"
        "import google.colab  # noqa: F401\n")
    return ipython_dir


# --- the wheel -------------------------------------------------------------------------------------


def checkout_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout: what a commit of it would hold."""
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (ROOT / f).is_file()})


def build_wheel(log: Path) -> Path:
    """``ftlab-<version>-py3-none-any.whl`` of the checkout as it is now, in build/colab-wheel/.
    Built from a copy, so that setuptools' build files and egg-info stay out of the work tree."""
    src = OUT / "src"
    for d in (src, WHEELS):
        if d.exists():
            shutil.rmtree(d)
    for rel in checkout_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest)
    run_logged([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--progress-bar", "off",
                str(src), "-w", str(WHEELS)], log)
    shutil.rmtree(src)
    wheels = sorted(WHEELS.glob("ftlab-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one ftlab wheel in {WHEELS}, found {wheels}")
    return wheels[0]


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


# --- inside the venv: the lessons and the checks ----------------------------------------------------


def freeze(venv: Path) -> dict[str, str]:
    out = subprocess.run([str(venv_python(venv)), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                         check=True, capture_output=True, text=True).stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


CHECK_CELLS = [
    # The stand-in is what the set-up cell saw.
    'import sys\nimport google.colab\nassert "google.colab" in sys.modules and google.colab.IS_STUB',
    # Versions, where ftlab imports from, and the packages the set-up cell must have brought.
    '''import importlib.metadata as md, json, os
import ftlab, bitsandbytes, trl, ipywidgets
info = {"versions": {}, "ftlab_version": ftlab.__version__, "ftlab_file": ftlab.__file__,
        "bitsandbytes_file": bitsandbytes.__file__, "ipywidgets": ipywidgets.__version__}
for name in %r:
    try:
        info["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        info["versions"][name] = None
from ftlab import chat, measure, models
info["lesson_names"] = (all(hasattr(measure, n) for n in ("make_optimizer", "measure_setup", "param_bytes"))
                        and hasattr(chat, "generate") and hasattr(models, "load_causal_lm"))''' % (KEY_LIBS,),
    # Each explorer builds and displays in this kernel (ipywidgets as Colab ships it).
    '''from IPython.display import display
from ftlab import widgets
from google.colab import output
explorers = {"rank_alpha": widgets.rank_alpha_explorer([(64, 64), (64, 128)], 100_000, singular_values=[3.0, 2.0, 1.0]),
             "memory": widgets.memory_explorer(), "beta": widgets.beta_explorer((0.5, 0.5), (1.0, -1.0), ("a", "b"), measured={0.1: 0.2})}
for w in explorers.values():
    display(w)
info["explorers"] = {k: [type(c).__name__ for c in w.children] for k, w in explorers.items()}
info["custom_widget_manager"] = output.custom_widget_manager_enabled''',
    f'print({CHECK_PREFIX!r} + json.dumps(info))',
]


def check_notebook():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CHECK_CELLS]
    return nb


def setup_cell_seconds(nb) -> float | None:
    """Wall time of the first code cell (the set-up cell), from nbclient's timing metadata."""
    from datetime import datetime

    code = [c for c in nb.cells if c.cell_type == "code"]
    timing = code[0].metadata.get("execution", {}) if code else {}
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 1)


def error_line(nb) -> str | None:
    """``cell N: Name: message`` for the first failing cell, the message's first non-blank line
    (transformers' ImportErrors start with a newline)."""
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                lines = [ln.strip() for ln in str(o.get("evalue", "")).splitlines() if ln.strip()]
                return f"cell {i}: {o.get('ename')}: {lines[0] if lines else ''}"
    return None


def inner(args) -> int:
    """Run in build/colab-venv's python: the lessons, then the check notebook; results as JSON."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import nbformat
    from rehearse import run_lesson
    from run_lessons import lesson_files

    out = args.out
    results = []
    for path in lesson_files(args.lessons):
        r = run_lesson(path, args.card, out, args.cell_timeout)
        executed = nbformat.read(out / f"{path.stem}.ipynb", as_version=4)
        r["setup_seconds"] = setup_cell_seconds(executed)
        r["error"] = error_line(executed) or r["error"]
        print(f"  {r['lesson']}: {r['seconds']:.0f} s, {'ok' if r['ok'] else 'FAILED ' + r['error']}", flush=True)
        results.append(r)
    check_path = out / "colab_check.ipynb"
    nbformat.write(check_notebook(), check_path)
    check = run_lesson(check_path, args.card, out, args.cell_timeout)
    executed = nbformat.read(out / "colab_check.ipynb", as_version=4)
    info = {}
    for cell in executed.cells:
        for o in cell.get("outputs", []):
            for line in o.get("text", "").splitlines() if o.get("output_type") == "stream" else []:
                if line.startswith(CHECK_PREFIX):
                    info = json.loads(line[len(CHECK_PREFIX):])
    info["ok"], info["error"] = check["ok"], check["error"]
    (out / "inner.json").write_text(json.dumps({"lessons": results, "check": info}, indent=1))
    return 0


# --- the report ------------------------------------------------------------------------------------


def checks(before: dict, after: dict, info: dict, wheel: Path, venv: Path) -> list[tuple[str, bool, str]]:
    """(what, passed, detail) for each thing the first cell must get right."""
    version = wheel_version(wheel)
    ftlab_file = info.get("ftlab_file") or ""
    rows = [
        ("the check notebook ran", bool(info.get("ok")), info.get("error") or "ok"),
        ("ftlab installed is the wheel's version", after.get("ftlab") == version == info.get("ftlab_version"),
         f"pip: {after.get('ftlab')}, ftlab.__version__: {info.get('ftlab_version')}, wheel: {version}"),
        ("ftlab imports from the venv, not the checkout", ftlab_file.startswith(str(venv)), ftlab_file or "not imported"),
        ("the lessons' names exist (ftlab.measure, ftlab.chat, the ftlab.models package)",
         bool(info.get("lesson_names")), str(info.get("lesson_names"))),
        ("bitsandbytes installed (the quant extra)", bool(after.get("bitsandbytes")) and bool(info.get("bitsandbytes_file")),
         str(after.get("bitsandbytes"))),
        ("trl installed", bool(after.get("trl")), str(after.get("trl"))),
    ]
    for name, want in KEPT.items():
        rows.append((f"{name} kept (the constraints file)", before.get(name) == after.get(name) == want,
                     f"{before.get(name)} -> {after.get(name)}"))
    colab_widgets = before.get("ipywidgets")
    rows.append(("ipywidgets kept at Colab's version", after.get("ipywidgets") == colab_widgets == info.get("ipywidgets"),
                 f"{colab_widgets} -> {after.get('ipywidgets')}"))
    explorers = info.get("explorers") or {}
    rows.append(("every explorer builds and displays", set(explorers) == {"rank_alpha", "memory", "beta"},
                 ", ".join(f"{k}: {len(v)} widgets" for k, v in explorers.items()) or "none"))
    rows.append(("no custom widget manager needed", info.get("custom_widget_manager") is False,
                 f"enable_custom_widget_manager called: {info.get('custom_widget_manager')}"))
    return rows


def changes(before: dict, after: dict) -> list[str]:
    """What the set-up cell's pip install changed, one line a package."""
    lines = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        lines.append(f"{name}: {'added' if a is None else a} -> {'removed' if b is None else b}")
    return lines


def tested_versions(path: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """The exact versions the tests and ``make lessons`` run on (requirements.txt)."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def older(installed: str | None, tested: str | None) -> bool:
    from packaging.version import Version

    return bool(installed and tested) and Version(installed) < Version(tested)


def md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def report(results: list[dict], rows: list, before: dict, after: dict, timings: dict, args, wheel: Path,
           python_version: str) -> str:
    lessons = ["| lesson | seconds | set-up cell (s) | status |", "|---|---:|---:|---|"]
    for r in results:
        lessons.append(md_row([r["lesson"], f"{r['seconds']:.1f}", r.get("setup_seconds") or "?",
                               "ok" if r["ok"] else f"**FAILED** {r['error']}"]))
    tested = tested_versions()
    versions = ["| library | Colab (assumed) | after the set-up cell | tests run on |", "|---|---|---|---|"]
    versions += [md_row([n, before.get(n) or "—", after.get(n) or "—",
                         (tested.get(n) or "—") + (" (Colab's is older)" if older(after.get(n), tested.get(n))
                                                   else "")]) for n in KEY_LIBS]
    behind = [n for n in KEY_LIBS if n not in KEPT and older(after.get(n), tested.get(n))]
    if behind:
        versions += ["", f"pip kept Colab's older {', '.join(behind)} (pyproject.toml's floors allow them): on Colab "
                         "the lessons run on versions `make test` does not, which is what this rehearsal is for."]
    check_rows = ["| check | | detail |", "|---|---|---|"]
    check_rows += [md_row([what, "ok" if ok else "**FAILED**", detail]) for what, ok, detail in rows]
    steps = ["| step | seconds |", "|---|---:|"] + [md_row([k, f"{v:.0f}"]) for k, v in timings.items()]
    changed = changes(before, after)
    env = (f"profile {args.profile}" + (f", simulated {args.card.upper()}, stand-ins, FTLAB_MAX_STEPS={args.max_steps}"
                                         if args.profile == "full" else ", offline"))
    fresh = "a fresh venv" if not args.reuse_venv else "a REUSED venv (not a first install)"
    return "\n".join([
        "# Colab first cell, rehearsed",
        "",
        f"{fresh} with Colab's preinstalled set (scripts/colab_preinstalled.txt) on Python {python_version}; "
        f"FTLAB_INSTALL=`{install_requirement(wheel)}`; {env}.",
        "",
        "## Lessons", "", *lessons, "",
        "## Checks", "", *check_rows, "",
        "## Versions", "", *versions, "",
        f"## What the set-up cell changed ({len(changed)} packages)", "",
        *(f"- {c}" for c in changed), "",
        "## Time", "", *steps, "",
    ])


def install_requirement(wheel: Path) -> str:
    return f"ftlab[quant] @ {wheel.resolve().as_uri()}"


def lesson_env(args, ipython_dir: Path, wheel: Path) -> dict[str, str]:
    """The environment the lessons' kernels inherit."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from rehearse import standin_env

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(FTLAB_INSTALL=install_requirement(wheel), IPYTHONDIR=str(ipython_dir),
               JUPYTER_PATH=str(VENV / "share" / "jupyter"), JUPYTER_DATA_DIR=str(OUT / "jupyter-data"),
               JUPYTER_CONFIG_DIR=str(OUT / "jupyter-config"), PIP_NO_INPUT="1", PIP_PROGRESS_BAR="off",
               PYTHONNOUSERSITE="1", PYDEVD_DISABLE_FILE_VALIDATION="1", MPLBACKEND="Agg", TOKENIZERS_PARALLELISM="false", TQDM_DISABLE="1",
               FTLAB_PROFILE=args.profile, PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if args.profile == "full":
        env.update(standin_env(STANDINS), FTLAB_SIMULATE_GPU=args.card, FTLAB_MAX_STEPS=str(args.max_steps))
    else:
        env.pop("FTLAB_SIMULATE_GPU", None)
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", default=["00", "04"], help="lesson number prefixes (default: 00 04)")
    parser.add_argument("--profile", choices=("full", "tiny"), default="full")
    parser.add_argument("--card", choices=("t4", "l4"), default="t4", help="the simulated GPU (full profile)")
    parser.add_argument("--max-steps", type=int, default=2, help="FTLAB_MAX_STEPS (full profile)")
    parser.add_argument("--cell-timeout", type=int, default=900)
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter the venv is made from (default: this one's base Python)")
    parser.add_argument("--reuse-venv", action="store_true",
                        help="keep build/colab-venv/ if it exists: quicker, but ftlab is already in it")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)  # run inside the venv
    args = parser.parse_args(argv)
    if args.inner:
        return inner(args)

    start = time.perf_counter()
    timings: dict[str, float] = {}
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("inner.json", "install.log"):
        (out / stale).unlink(missing_ok=True)
    log = out / "install.log"

    def step(name: str, t0: float) -> None:
        timings[name] = time.perf_counter() - t0
        print(f"  {name}: {timings[name]:.0f} s", flush=True)

    if args.profile == "full":
        sys.path.insert(0, str(ROOT / "scripts"))
        from rehearse import ensure_standins

        t0 = time.perf_counter()
        ensure_standins(STANDINS)
        step("hub stand-ins (built only if missing or stale)", t0)

    t0 = time.perf_counter()
    if args.reuse_venv and venv_python().exists():
        print(f"reusing {VENV} (ftlab is already installed in it: this is not a first install)", flush=True)
    else:
        print(f"creating {VENV}: Colab's preinstalled set + torch {KEPT['torch']} (log: {log})", flush=True)
        create_venv(VENV, args.python, log)
    ipython_dir = install_stub(VENV)
    step("venv with Colab's preinstalled set", t0)

    t0 = time.perf_counter()
    wheel = build_wheel(log)
    step(f"wheel {wheel.name}", t0)

    before = freeze(VENV)
    python_version = subprocess.run([str(venv_python()), "-c", "import platform; print(platform.python_version())"],
                                    capture_output=True, text=True).stdout.strip()
    print(f"running lessons {' '.join(args.lessons)} in {VENV}'s kernel ({args.profile} profile), "
          f"FTLAB_INSTALL={install_requirement(wheel)}", flush=True)
    t0 = time.perf_counter()
    inner_cmd = [str(venv_python()), str(Path(__file__).resolve()), *args.lessons, "--inner", "--profile", args.profile,
                 "--card", args.card, "--max-steps", str(args.max_steps), "--cell-timeout", str(args.cell_timeout),
                 "--out", str(out)]
    subprocess.run(inner_cmd, env=lesson_env(args, ipython_dir, wheel), cwd=ROOT, check=False)
    step("lessons and checks in the Colab venv", t0)
    after = freeze(VENV)

    inner_path = out / "inner.json"
    data = json.loads(inner_path.read_text()) if inner_path.is_file() else {
        "lessons": [], "check": {"ok": False, "error": "the rehearsal process died"}}
    results, info = data["lessons"], data["check"]
    rows = checks(before, after, info, wheel, VENV)
    timings["total, from scratch" if not args.reuse_venv else "total (venv reused)"] = time.perf_counter() - start

    text = report(results, rows, before, after, timings, args, wheel, python_version)
    (out / "summary.md").write_text(text)
    print()
    print(text)
    print(f"written to {out / 'summary.md'}")
    failed = [r for r in results if not r["ok"]] or not results
    bad = [what for what, ok, _ in rows if not ok]
    if bad:
        print(f"install/first-cell checks FAILED: {'; '.join(bad)}")
    return 1 if bad or failed else 0


if __name__ == "__main__":
    sys.exit(main())
