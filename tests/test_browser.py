"""Browser tests of the real UI: JupyterLab on a free local port, Debian's headless Chromium driven by selenium through
chromedriver (`make browser` installs both), notebooks 04 and 02 run with Run All as a learner would; the play panel
is driven with keys, buttons and autoplay, and a Soft Mask slider is dragged. A failing test leaves a screenshot in
runs/browser/. The stored outputs of every widget cell carry the widget's state (a learner sees the panel before
running anything)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SHOTS = ROOT / "runs" / "browser"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
RUN_ALL_S = 420  # generous: notebook 02 takes about a minute on 2 cores, 04 less with its data collected


TEXT_WIDGET = re.compile(r"^(VBox|HBox|Box|GridBox|Tab|Accordion|interactive|Output|Image|Button|ToggleButton|"
                         r"\w*Slider|Dropdown|Checkbox|Label|HTML)\(")  # a widget's repr stored instead of the widget


def text_only_widgets(nb: dict) -> list[int]:
    """Indices of code cells whose stored output is a widget's text repr without the widget view."""
    return [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" for o in c.get("outputs", [])
            if WIDGET_VIEW not in (d := o.get("data", {})) and TEXT_WIDGET.match("".join(d.get("text/plain", "")))]


def widget_models(nb: dict) -> tuple[list[str], set[str]]:
    """(model ids of the widget views in a notebook's stored outputs, model ids of its saved widget state)."""
    views = [o["data"][WIDGET_VIEW]["model_id"] for c in nb["cells"] if c["cell_type"] == "code"
             for o in c.get("outputs", []) if WIDGET_VIEW in o.get("data", {})]
    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    return views, set(state)


def test_a_widget_stored_as_text_is_caught():
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "execute_result",
                                                        "data": {"text/plain": ["VBox(children=(HBox(..."]}}]}]}
    assert text_only_widgets(nb) == [0] and widget_models(nb) == ([], set())


@pytest.mark.parametrize("name", ["02_soft_masks", "04_sample_rollout"])
def test_stored_widget_outputs_render_before_running(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert not text_only_widgets(nb), f"{name}: cells {text_only_widgets(nb)} store a widget as text: `make nb-refresh`"
    views, state = widget_models(nb)
    assert views, f"{name}: no widget in the stored outputs (only text): run `make nb-refresh` to store them"
    missing = [v for v in views if v not in state]
    assert not missing, f"{name}: widget outputs without saved state {missing} render as text: `make nb-refresh`"


# ----------------------------------------------------------------------------------------------------- the browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving copies of notebooks 02 and 04 (runs in a temporary folder); yields (url, folder)."""
    if not (CHROMIUM.exists() and DRIVER.exists()):
        pytest.fail(f"{CHROMIUM} or {DRIVER} missing: run `make browser` (Debian packages chromium, chromium-driver)")
    home = tmp_path_factory.mktemp("lab")
    for name in ("02_soft_masks", "04_sample_rollout"):
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", home)
    labconfig = home / "config" / "labconfig"  # no "news?" notification over the page
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port = free_port()
    env = {**os.environ, "PIWM_RUNS_DIR": str(home / "runs"), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
                             "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={home}",
                             "--LabApp.expose_app_in_browser=True", "--allow-root"],  # CI runs as root
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"JupyterLab did not start: {(home / 'lab.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    yield url, home
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def browser(request, tmp_path):
    """Headless Chromium; a screenshot in runs/browser/<test>.png when the test fails (or always, with
    PIWM_SCREENSHOTS=1: pictures of the real UI for the docs)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,1000"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    drv.set_script_timeout(60)
    yield drv
    report = getattr(request.node, "rep_call", None)
    if report is not None and (report.failed or os.environ.get("PIWM_SCREENSHOTS") == "1"):
        SHOTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(SHOTS / f"{request.node.name}.png"))
    drv.quit()


def wait(drv, script: str, timeout: float, what: str):
    """Poll a JavaScript expression until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = drv.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


NB = "(window.jupyterapp && Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.sessionContext))"
KERNEL = f"({NB} && {NB}.sessionContext.session && {NB}.sessionContext.session.kernel)"


def run_all(drv, url: str, name: str) -> None:
    """Open a notebook in JupyterLab, Run All, wait until every code cell ran; fail on an error output."""
    drv.get(f"{url}/lab/tree/{name}.ipynb?reset")
    wait(drv, f"{KERNEL} && {KERNEL}.status === 'idle'", 120, f"{name}'s kernel")
    drv.find_element("css selector", ".jp-Notebook .jp-Cell").click()  # focus: the commands act on this notebook
    wait(drv, f"window.jupyterapp.shell.currentWidget === {NB}", 30, f"{name} to take the focus")
    drv.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    time.sleep(2)
    done = f"""{KERNEL}.status === 'idle' && {NB}.content.widgets.every(c => c.model.type !== 'code'
        || (c.model.executionCount !== null && c.promptNode.textContent.indexOf('*') < 0))"""
    wait(drv, done, RUN_ALL_S, f"Run All of {name}")
    errors = drv.execute_script(f"""return {NB}.content.widgets.filter(c => c.model.type === 'code')
        .flatMap(c => c.model.outputs.toJSON()).filter(o => o.output_type === 'error')
        .map(o => o.ename + ': ' + o.evalue)""")
    assert not errors, f"{name}: {errors}"


def by_text(drv, tag: str, text: str):
    from selenium.webdriver.common.by import By
    return drv.find_element(By.XPATH, f"//{tag}[normalize-space()='{text}']")


def panel_state(drv) -> dict:
    """The play panel's frame (image source) and its status and frames/s labels."""
    return drv.execute_script("""
        const img = document.querySelector('.jp-OutputArea-output .widget-image');
        const labels = [...document.querySelectorAll('.widget-label')].map(e => e.textContent);
        return {src: img && img.src, status: labels.find(t => t.startsWith('frame ')) || '',
                fps: labels.find(t => t.endsWith('frames/s')) || ''};""")


def test_notebook_04_play_panel_answers_keys_buttons_and_autoplay(lab, browser):
    from selenium.webdriver.common.keys import Keys

    url, _ = lab
    run_all(browser, url, "04_sample_rollout")
    start = panel_state(browser)
    assert start["src"] and start["status"].startswith("frame 5 ")  # the cell's 5 scripted presses
    img = browser.find_element("css selector", ".jp-OutputArea-output .widget-image")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    img.click()
    img.send_keys(Keys.ARROW_LEFT)  # the keyboard drives: one step, lane left
    wait(browser, "[...document.querySelectorAll('.widget-label')].some(e => e.textContent.startsWith('frame 6 ') "
         "&& e.textContent.includes('LANE_LEFT'))", 60, "the left arrow's step")
    after_key = panel_state(browser)
    assert after_key["src"] != start["src"] and after_key["fps"]
    by_text(browser, "button", "faster").click()  # a button drives
    wait(browser, "[...document.querySelectorAll('.widget-label')].some(e => e.textContent.startsWith('frame 7 ') "
         "&& e.textContent.includes('FASTER'))", 60, "the faster button's step")
    assert panel_state(browser)["src"] != after_key["src"]
    toggle = by_text(browser, "button", "Warm Start: on")
    toggle.click()  # the toggle says what is on
    wait(browser, "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'Warm Start: off')",
         30, "the Warm Start toggle's label")
    by_text(browser, "button", "autoplay").click()  # the model drives itself until stopped
    wait(browser, "[...document.querySelectorAll('.widget-label')].some(e => /^frame (9|[1-9][0-9]+) /.test("
         "e.textContent))", 120, "autoplay to take two steps")
    by_text(browser, "button", "stop").click()
    wait(browser, "[...document.querySelectorAll('button')].some(b => b.textContent.trim() === 'autoplay')", 60,
         "autoplay to stop")
    stopped = panel_state(browser)["status"]
    time.sleep(3)
    assert panel_state(browser)["status"] == stopped  # stopped means stopped


def test_notebook_02_slider_redraws_the_mask(lab, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    url, _ = lab
    run_all(browser, url, "02_soft_masks")
    pictures = "[...document.querySelectorAll('.widget-output img')].map(i => i.src)"
    before = browser.execute_script(f"return {pictures}")  # empty until a slider moves (the first is drawn below)
    handle = browser.execute_script("""
        const box = [...document.querySelectorAll('.widget-slider')].find(
            s => s.querySelector('.widget-label') && s.querySelector('.widget-label').textContent.trim() === 'r_glob');
        return box && box.querySelector('.noUi-handle');""")
    assert handle is not None, "no r_glob slider"
    ActionChains(browser).scroll_to_element(handle).perform()
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", handle)
    time.sleep(1)
    ActionChains(browser).click_and_hold(handle).move_by_offset(60, 0).release().perform()
    old = json.dumps(before[0] if before else "")
    wait(browser, f"{pictures}.length && {pictures}[0] !== {old}", 60, "the mask picture to change after the drag")
    label = browser.execute_script("""
        const box = [...document.querySelectorAll('.widget-slider')].find(
            s => s.querySelector('.widget-label').textContent.trim() === 'r_glob');
        return box.querySelector('.widget-readout').textContent;""")
    assert float(label) > 0.35  # dragged right from the default 0.35
