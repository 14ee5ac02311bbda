"""Load every page of the built book in headless Chromium and check what a reader gets.

    python tools/check_browser.py [--html _build/html] [--out _build/browser] [--chromium PATH]
    make check-browser

The book is served over HTTP on 127.0.0.1 (a random free port) from `_build/html`, and each page
is opened in headless Chromium driven over the DevTools protocol (websocket-client). A page
passes when, after its load event and MathJax's typesetting have finished:
- the console shows no error and no uncaught exception;
- no request failed (network error, blocked, or HTTP status >= 400) and none left 127.0.0.1;
- every <img> has loaded (complete, natural width > 0);
- no raw TeX is left in the visible text (`\\(`, `\\[`, `$$`, `\\begin{`) outside code, and
  MathJax reported no error (`mjx-merror`).
It also reports, without failing, outputs wider than the text column (horizontal scrolling) and
writes two screenshots per page to `--out`: the first screen (1280×900) and the whole page at a
reduced scale. Exit status 1 when any page fails; a summary line per page either way.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import websocket

ROOT = Path(__file__).resolve().parents[1]
PAGE_TIMEOUT = 60.0

INSPECT_JS = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea').forEach(e => e.remove());
  const text = clone.textContent;
  const raw = [];
  for (const pat of ['\\(', '\\)', '\\[', '\\]', '$$', '\\begin{']) {
    const i = text.indexOf(pat);
    if (i >= 0) raw.push(text.slice(Math.max(0, i - 40), i + 40).replace(/\s+/g, ' '));
  }
  const article = document.querySelector('article') || main;
  const limit = article.getBoundingClientRect().width + 1;
  const wide = [...document.querySelectorAll('article .output, article .cell_output > *, article table, article img, article pre')]
    .filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().width > limit)
    .map(e => e.tagName.toLowerCase() + '.' + (e.className || '').toString().split(' ')[0] + ' ' + e.scrollWidth + 'px');
  return JSON.stringify({
    images: images.length, broken, raw,
    mathjax: document.querySelectorAll('mjx-container').length,
    merror: document.querySelectorAll('mjx-merror').length,
    wide: wide.slice(0, 20), nwide: wide.length, column: Math.round(limit),
    title: document.title, height: document.documentElement.scrollHeight,
  });
})()
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep the report readable
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium(explicit: str | None = None) -> str:
    """Chromium from the system; installed with apt-get when missing and possible."""
    for name in ([explicit] if explicit else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        found = shutil.which(name) if name else None
        if found:
            return found
    if shutil.which("apt-get"):
        print("Chromium not found: installing it with apt-get (Debian package 'chromium')", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False,
                       env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        found = shutil.which("chromium")
        if found:
            return found
    raise SystemExit("no Chromium: install the system package (Debian: apt-get install chromium) or pass --chromium")


class DevTools:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws_url: str) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=PAGE_TIMEOUT, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        deadline = time.monotonic() + PAGE_TIMEOUT
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.5, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout: float = PAGE_TIMEOUT) -> None:
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.5, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return
        raise TimeoutError(method)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.05, end - time.monotonic()))
            try:
                msg = json.loads(self.ws.recv())
            except (websocket.WebSocketTimeoutException, TimeoutError):
                return
            if "method" in msg:
                self.events.append(msg)

    def close(self) -> None:
        self.ws.close()


def check_page(port: int, base: str, rel: str, out: Path) -> dict:
    new = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT"), timeout=30).read())
    dt = DevTools(new["webSocketDebuggerUrl"])
    try:
        for domain in ("Page", "Runtime", "Network", "Log"):
            dt.call(f"{domain}.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        dt.call("Page.navigate", url=f"{base}/{rel}")
        dt.wait_for("Page.loadEventFired")
        for attempt in range(5):  # a redirect page navigates again: evaluate once it has settled
            try:
                answer = dt.call("Runtime.evaluate", expression=INSPECT_JS, awaitPromise=True, returnByValue=True)
            except RuntimeError as exc:  # "Inspected target navigated or closed"
                answer = {"error": str(exc)}
            if isinstance(answer.get("result", {}).get("value"), str):
                break
            dt.drain(1.0)
        else:
            raise RuntimeError(f"{rel}: the page never settled ({answer})")
        result = json.loads(answer["result"]["value"])
        dt.drain(0.5)
        shot = dt.call("Page.captureScreenshot", format="png")
        stem = rel.replace("/", "__").removesuffix(".html")
        (out / f"{stem}.png").write_bytes(base64.b64decode(shot["data"]))
        height = min(int(result["height"]), 16000)
        full = dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                       clip={"x": 0, "y": 0, "width": 1280, "height": height, "scale": 0.5})
        (out / f"{stem}.full.png").write_bytes(base64.b64decode(full["data"]))
    finally:
        dt.close()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/json/close/{new['id']}", timeout=10).read()

    errors, failed = [], []
    for e in dt.events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            errors.append(p["exceptionDetails"].get("exception", {}).get("description", p["exceptionDetails"].get("text")))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"{p['entry'].get('source')}: {p['entry']['text']} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            failed.append(f"{p.get('errorText')} ({p.get('requestId')})")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            failed.append(f"HTTP {p['response']['status']} {p['response']['url']}")
        elif m == "Network.requestWillBeSent" and not p["request"]["url"].startswith((base, "data:", "blob:")):
            failed.append(f"left the book: {p['request']['url']}")
    result.update(page=rel, errors=errors, failed=failed)
    result["ok"] = not (errors or failed or result["broken"] or result["raw"] or result["merror"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "browser")
    ap.add_argument("--chromium", default=None)
    args = ap.parse_args(argv)
    html = args.html.resolve()
    if not (html / "index.html").exists():
        raise SystemExit(f"no built book at {html}: run `make book` first")
    pages = sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                   if not {"_static", "_sources"} & set(p.relative_to(html).parts))
    args.out.mkdir(parents=True, exist_ok=True)
    chromium = find_chromium(args.chromium)

    http_port, cdp_port = _free_port(), _free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", http_port),
                                             functools.partial(_Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="book-chromium-")
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
         f"--remote-debugging-port={cdp_port}", "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failures = 0
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/version", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or browser.poll() is not None:
                    raise SystemExit("Chromium did not start (DevTools endpoint not answering)")
                time.sleep(0.3)
        base = f"http://127.0.0.1:{http_port}"
        report = []
        for rel in pages:
            r = check_page(cdp_port, base, rel, args.out)
            report.append(r)
            failures += not r["ok"]
            status = "ok  " if r["ok"] else "FAIL"
            print(f"{status} {rel}: {r['images']} images, {r['mathjax']} formulas, {len(r['errors'])} console errors, "
                  f"{len(r['failed'])} failed requests, {len(r['broken'])} broken images, raw TeX {len(r['raw'])}, "
                  f"{r['nwide']} outputs wider than the {r['column']} px column", flush=True)
            for key in ("errors", "failed", "broken", "raw"):
                for item in r[key][:5]:
                    print(f"     {key}: {item}")
        (args.out / "report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
        print(f"{len(pages) - failures}/{len(pages)} pages clean; screenshots and report.json in {args.out}")
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=15)
        except subprocess.TimeoutExpired:
            browser.kill()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
