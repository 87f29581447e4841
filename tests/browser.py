"""Open a page in headless Chromium through the DevTools protocol: console errors, requests, images."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    title: str = ""
    headings: list[str] = field(default_factory=list)


def check_page(path: Path, timeout: float = 60.0) -> PageCheck:
    """Load ``path`` and report console errors, network requests (other than data:/file:) and images."""
    import websocket

    result = PageCheck()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [chromium_path(), *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.time() + timeout
            while not port_file.exists() or not port_file.read_text().strip():
                if time.time() > deadline:
                    raise TimeoutError("chromium did not start")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t["type"] == "page")
            ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout)
            ids = iter(range(1, 1000))

            def send(method: str, **params) -> int:
                n = next(ids)
                ws.send(json.dumps({"id": n, "method": method, "params": params}))
                return n

            for method in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
                send(method)
            send("Page.navigate", url=path.resolve().as_uri())

            def collect(msg: dict) -> None:
                method = msg.get("method")
                if method == "Runtime.consoleAPICalled" and msg["params"]["type"] in ("error", "assert"):
                    result.errors.append(str(msg["params"]["args"]))
                elif method == "Runtime.exceptionThrown":
                    result.errors.append(msg["params"]["exceptionDetails"].get("text", "exception"))
                elif method == "Log.entryAdded" and msg["params"]["entry"]["level"] == "error":
                    result.errors.append(msg["params"]["entry"]["text"])
                elif method == "Network.requestWillBeSent":
                    url = msg["params"]["request"]["url"]
                    if not url.startswith(("data:", "file:")):
                        result.requests.append(url)

            def evaluate(expression: str):
                n = send("Runtime.evaluate", expression=expression, returnByValue=True)
                while True:
                    msg = json.loads(ws.recv())
                    if msg.get("id") == n:
                        return msg.get("result", {}).get("result", {}).get("value")
                    collect(msg)

            # poll the document's state rather than wait for one event, which a busy machine can make us miss
            while evaluate("document.readyState + '|' + location.href") != f"complete|{path.resolve().as_uri()}":
                if time.time() > deadline + timeout:
                    raise TimeoutError("the page did not finish loading")
                time.sleep(0.2)
            script = (
                "JSON.stringify({title: document.title, images: [...document.images].map(i => "
                "({ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth})), "
                "headings: [...document.querySelectorAll('h2')].map(h => h.textContent)})"
            )
            value = json.loads(evaluate(script))
            result.images, result.title, result.headings = value["images"], value["title"], value["headings"]
            ws.close()
        finally:
            proc.kill()
            proc.wait()
    return result
