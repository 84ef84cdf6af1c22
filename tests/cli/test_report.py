"""`fer-sweep report` on a finished study: a self-contained report.html with every figure, checked in headless
Chromium. Nothing here touches the network."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import invoke


def test_report_writes_self_contained_html_and_every_figure(finished_study):
    result = invoke("report", "--results", finished_study["results"], "--json")
    done = json.loads(result.stdout)
    assert done["html"] == str(finished_study["folder"] / "report.html") and done["trials"] == 6
    assert done["importance_basis"] == {"complete_trials": done["importance_basis"]["complete_trials"],
                                        "reliable_from": 20, "reliable": False}  # 6 trials: flagged unreliable
    assert set(done["figures"]) == {"history", "importances", "parallel", "slices", "curves", "confusion", "f1",
                                    "classes"}, done["skipped"]
    for path in done["figures"].values():
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
    page = Path(done["html"]).read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page.lower() and not re.search(r'(src|href)="(https?:|//|file:)', page)
    metrics = json.loads((finished_study["final"] / "metrics.json").read_text())
    assert f"{100 * metrics['test/acc']['mean']:.2f}%" in page  # the final model's test accuracy is reported
    assert "report.html" in invoke("report", "--results", finished_study["results"]).stdout


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4 in the child)."""

    def __init__(self, exe: str, profile: Path):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def child_fds():
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=child_fds, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(res_w)
        self.buf, self.next_id, self.events = b"", 0, []

    def _recv(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.res_r], [], [], max(0.0, deadline - time.time()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self.buf += chunk
        message, _, self.buf = self.buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout_s: float = 30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout_s
        while True:
            reply = self._recv(deadline)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str, timeout_s: float = 30) -> dict:
        deadline = time.time() + timeout_s
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._recv(deadline))

    def open(self, url: str) -> str:
        """Load `url` in a fresh 1280x2000 tab; returns the tab's session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 2000, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_event("Page.loadEventFired")
        return session

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append("Uncaught " + (details.get("exception", {}).get("description") or details.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console error " + json.dumps(params.get("args", []))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append("log error " + params["entry"].get("text", "")[:300])
        return found

    def images(self, session: str) -> list:
        expression = ("JSON.stringify(Array.from(document.images).map("
                      "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]))")
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return json.loads(result["result"]["value"])

    def close(self):
        try:
            self.call("Browser.close", timeout_s=10)
        except (TimeoutError, EOFError, OSError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.res_r)


def test_report_renders_in_headless_chromium(finished_study, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    invoke("report", "--results", finished_study["results"])
    browser = Chromium(exe, tmp_path / "profile")
    try:
        # The harness itself must see a script error and a broken image, or its silence below means nothing.
        bad = browser.open("data:text/html,<script>throw new Error('boom')</script><img alt=x src='nope.png'>")
        assert any("boom" in e for e in browser.errors()) and browser.images(bad)[0][2] == 0
        session = browser.open((finished_study["folder"] / "report.html").as_uri())
        assert browser.errors() == []
        images = browser.images(session)
        assert len(images) == 8 and all(done and w > 300 and h > 200 for _, done, w, h in images), images
        shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
    finally:
        browser.close()
    # kept beside the report, for a human to look at
    (finished_study["folder"] / "report-screenshot.png").write_bytes(shot)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (2000, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # not blank, not one colour
    assert (pixels.min(axis=2) < 235).mean() > 0.03  # a fair share of non-white: text, tables and plots
    assert (np.ptp(pixels, axis=2) > 60).mean() > 0.005  # coloured plot marks, not just black text
