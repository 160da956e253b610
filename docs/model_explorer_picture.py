"""Re-take docs/model_explorer_sdpa.png: Model Explorer's view of nodebisect's overlays, in headless Chromium.

    python docs/model_explorer_picture.py DIR   # DIR from: nodebisect locate samples/build/SdpaFullyMaskedRow.pt2 --model-explorer DIR

Needs the explorer extra and Chromium (``apt-get install -y chromium``). Chromium's ``--screenshot``
fires at the page's load event, before Model Explorer has converted the model; so the page it
loads frames the viewer and holds its own load event with an image that answers after SECONDS.
The viewer's URL selects the culprit and flattens the layers (its ``uiState``).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

VIEWER_PORT, PAGE_PORT, SECONDS = 8089, 8090, 25
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1600,1000"]


class Page(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/slow"):
            time.sleep(SECONDS)
            body, kind = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"
        else:
            body = (f'<html><body style="margin:0"><iframe src="{self.target}" style="border:0;width:100vw;height:100vh">'
                    '</iframe><img src="/slow" style="display:none"></body></html>').encode()
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main(folder: str, out: str = "docs/model_explorer_sdpa.png") -> None:
    me = Path(folder).resolve()
    culprit = json.loads((me / "report.json").read_text())["first_divergent"]["onnx_node"]
    overlays = [str(me / "nodebisect_max_abs.json"), str(me / "nodebisect_status.json")]
    viewer = subprocess.Popen([str(Path(sys.executable).parent / "model-explorer"), str(me / "model.onnx"), "--extensions=model_explorer_onnx",
                               f"--port={VIEWER_PORT}", "--no_open_in_browser"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = {"models": [{"url": str(me / "model.onnx")}], "nodeData": overlays, "nodeDataTargets": [""] * len(overlays),
            "uiState": {"paneStates": [{"deepestExpandedGroupNodeIds": [], "selectedNodeId": culprit, "selectedGraphId": "main_graph",
                                        "selectedCollectionLabel": "", "widthFraction": 1, "flattenLayers": True}]}}
    Page.target = f"http://localhost:{VIEWER_PORT}/?data=" + urllib.parse.quote(json.dumps(data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PAGE_PORT), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        time.sleep(10)  # the viewer's server starts
        subprocess.run(["chromium", *FLAGS, "--user-data-dir=/tmp/nodebisect-chromium", f"--screenshot={Path(out).resolve()}",
                        f"http://127.0.0.1:{PAGE_PORT}/"], check=True, capture_output=True, timeout=SECONDS + 60)
    finally:
        server.shutdown()
        viewer.terminate()


if __name__ == "__main__":
    main(*sys.argv[1:])
