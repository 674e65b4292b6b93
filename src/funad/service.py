"""`funad serve`: a fitted model behind HTTP (FastAPI), loaded once.

``POST /predict`` takes an image file as the multipart form field ``file`` and answers JSON:
score, label, the thresholds, the image's size and (for an anomalous image) its defect regions;
``?heatmap=true`` adds the heatmap as a base64 PNG. ``GET /health`` says the model is ready;
``GET /`` is a one-page form to drop an image and see its heatmap. A bad upload (empty, too
large, not an image) gets a 4xx with a message, never a 500. Requests are served by a thread
pool; the model runs one image at a time under a lock (the backbone and scorer use every core
already, and are not made to be called from several threads at once).
"""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from funad._version import __version__
from funad.data.images import ImageLoadError, decode_image
from funad.model import FunAD
from funad.reports.heatmaps import heatmap_picture
from funad.reports.prediction_folder import label_name

_MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and headers around the file's bytes


def create_app(model: FunAD, model_dir: Path, max_upload_bytes: int) -> FastAPI:
    app = FastAPI(title="funad", version=__version__)
    model_lock = threading.Lock()
    too_large = f"upload too large: the limit is {max_upload_bytes:,} bytes (funad serve --max-upload-mb)"

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        # Refused from the header, before the body is read; the read below checks the bytes themselves.
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_upload_bytes + _MULTIPART_OVERHEAD:
            return JSONResponse({"detail": too_large}, status_code=413)
        return await call_next(request)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": str(model_dir), "backbone": model.config.backbone,
                "scorer": model.config.scorer, "threshold": model.threshold_,
                "pixel_threshold": model.pixel_threshold_, "funad": __version__}

    @app.post("/predict")
    def predict(file: Annotated[UploadFile, File(description="the image file")],
                heatmap: bool = False) -> dict[str, Any]:
        name = file.filename or "upload"
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, too_large)
        try:
            image = decode_image(data, name)
        except ImageLoadError as error:
            raise HTTPException(400 if not data else 415, str(error)) from None
        with model_lock:
            (prediction,) = model.predict(image)
        if prediction.anomaly_map is None:  # decoded above, so only a failure inside predict
            raise HTTPException(422, f"{name}: {prediction.error}")
        anomalous = bool(model.label(prediction.score))
        mask, regions = model.defect_regions(prediction.anomaly_map) if anomalous else (None, [])
        answer: dict[str, Any] = {
            "file": name, "score": prediction.score, "label": label_name(anomalous), "anomalous": anomalous,
            "threshold": model.threshold_, "pixel_threshold": model.pixel_threshold_,
            "width": image.width, "height": image.height, "regions": [region.to_dict() for region in regions]}
        if heatmap:
            buffer = io.BytesIO()
            heatmap_picture(image, prediction.anomaly_map, model.heatmap_range(), mask).save(buffer, format="PNG")
            answer["heatmap_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        return answer

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return _PAGE

    return app


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>funad</title>
<style>
body { font-family: sans-serif; margin: 2em; color: #222; }
#drop { border: 2px dashed #888; padding: 2em; text-align: center; max-width: 32em; }
#drop.over { background: #eef; }
#result img { max-width: 640px; display: block; margin-top: 1em; }
.anomalous { color: #b00; font-weight: bold; }
.error { color: #b00; }
</style></head>
<body>
<h1>funad</h1>
<p id="status">connecting to the model ...</p>
<form id="form">
  <div id="drop">Drop an image here, or <input type="file" id="file" name="file" accept="image/*"></div>
</form>
<div id="result"></div>
<script>
const status = document.getElementById("status"), result = document.getElementById("result");
const drop = document.getElementById("drop"), input = document.getElementById("file");
fetch("health").then((answer) => answer.json()).then((health) => {
  status.textContent =
    `model ready: ${health.backbone} / ${health.scorer}, threshold ${health.threshold.toPrecision(4)}`;
}).catch((error) => { status.textContent = `model not reachable: ${error}`; status.className = "error"; });

async function predict(file) {
  const form = new FormData();
  form.append("file", file);
  result.textContent = "scoring ...";
  const answer = await fetch("predict?heatmap=true", {method: "POST", body: form});
  const body = await answer.json();
  if (!answer.ok) { result.innerHTML = ""; const p = document.createElement("p"); p.className = "error";
                    p.textContent = body.detail; result.append(p); return; }
  result.innerHTML = "";
  const line = document.createElement("p");
  line.innerHTML = `score ${body.score.toPrecision(4)}: <span class="${body.label}">${body.label}</span>,
    ${body.regions.length} defect region(s)`;
  const picture = new Image();
  picture.alt = "heatmap";
  picture.src = `data:image/png;base64,${body.heatmap_png}`;
  result.append(line, picture);
}
input.addEventListener("change", () => input.files.length && predict(input.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault(); drop.classList.remove("over");
  if (event.dataTransfer.files.length) predict(event.dataTransfer.files[0]);
});
</script>
</body></html>
"""
