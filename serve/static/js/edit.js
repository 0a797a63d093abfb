// Editing: one to four prompts for a tuned video; each result appears when it finishes, playing beside the source
// clip's preview, with its per-stage timings (Server-Timing) and a download link; "another seed" is one click.

import { el } from "./dom.js";
import { animateFrames, parseNpy } from "./npy.js";

const EXTENSIONS = { mp4: "mp4", gif: "gif", npy: "npy" };

// "load;dur=12.3, denoise;dur=456.7" -> [["load", 12.3], ["denoise", 456.7]] (milliseconds)
export function serverTimings(header) {
  return (header || "").split(",").map((part) => part.trim()).filter(Boolean).map((part) => {
    const [name, ...params] = part.split(";");
    const duration = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    return [name.trim(), duration ? Number(duration.slice(4)) : NaN];
  });
}

export class Editor {
  constructor(api, gallery, container) {
    this.api = api;
    this.gallery = gallery;
    this.container = container;
    this.count = 0;
  }

  settingsFrom(form) {
    const data = new FormData(form);
    const request = { format: data.get("format") || "mp4" };
    const negative = data.get("negative_prompt");
    if (negative) request.negative_prompt = negative;
    for (const name of ["steps", "seed"]) if (data.get(name) !== "") request[name] = Number.parseInt(data.get(name), 10);
    if (data.get("guidance") !== "") request.guidance = Number(data.get("guidance"));
    const prompts = data.getAll("prompt").map((p) => p.trim()).filter(Boolean);
    return { videoId: data.get("video_id"), prompts, request };
  }

  async submit(form, errorNode, button) {
    errorNode.textContent = "";
    const { videoId, prompts, request } = this.settingsFrom(form);
    if (!videoId) {
      errorNode.textContent = "no video to edit yet: tune one first";
      return;
    }
    button.disabled = true;
    try {
      for (const prompt of prompts) await this.generate(videoId, { ...request, prompt });
    } finally {
      button.disabled = false;
    }
  }

  // One request, one result card; errors (one line from the API) stay on that card.
  async generate(videoId, request) {
    this.count += 1;
    const status = el("p", { className: "status muted", text: "generating…" });
    const card = el("article", { className: "result-card", "data-result": String(this.count) },
      el("h4", {}, el("span", { className: "prompt", text: request.prompt })),
      el("p", { className: "muted", text: `${videoId} · seed ${request.seed ?? "default"} · ${request.format}` }),
      status);
    this.container.prepend(card);
    try {
      const response = await this.api.request("POST", `/v1/videos/${encodeURIComponent(videoId)}/generate`, {
        json: request,
        onBusy: (wait, message) => { status.textContent = `busy, retrying in ${wait} s (${message})`; },
      });
      const blob = await response.blob();
      status.replaceWith(await this.resultView(videoId, request, response, blob));
      card.dataset.done = "true";
    } catch (error) {
      status.className = "error";
      status.textContent = error.message;
      card.dataset.done = "error";
    }
  }

  async resultView(videoId, request, response, blob) {
    const url = URL.createObjectURL(blob);
    const media = await this.media(request.format, url, blob);
    const video = this.gallery.find(videoId);
    let source = el("div", { className: "preview placeholder", text: "no preview" });
    try {
      const previewUrl = video ? await this.gallery.previewUrl(video) : null;
      if (previewUrl) source = el("img", { className: "preview source", src: previewUrl, alt: "source clip" });
    } catch (_) {
      // the placeholder stays: a result does not depend on its preview
    }
    const timings = serverTimings(response.headers.get("Server-Timing"));
    const name = `${videoId}-seed${request.seed ?? 0}.${EXTENSIONS[request.format]}`;
    const again = el("button", { type: "button", className: "another-seed", text: "Same prompt, another seed" });
    again.addEventListener("click", () => this.generate(videoId, { ...request, seed: (request.seed ?? 0) + 1 }));
    return el("div", { className: "result" },
      el("div", { className: "side-by-side" }, el("figure", {}, source, el("figcaption", { text: "source" })),
        el("figure", {}, media, el("figcaption", { text: "edit" }))),
      el("p", { className: "timings muted",
        text: timings.map(([stage, ms]) => `${stage} ${(ms / 1000).toFixed(2)} s`).join(" · ") }),
      el("p", {}, el("a", { className: "download", href: url, download: name, text: `Download ${name}` }), " ", again));
  }

  async media(format, url, blob) {
    if (format === "mp4") return el("video", { className: "edit", src: url, autoplay: true, loop: true, muted: true,
                                               playsinline: true, controls: true });
    if (format === "gif") return el("img", { className: "edit", src: url, alt: "edited video" });
    const canvas = el("canvas", { className: "edit" });
    animateFrames(canvas, parseNpy(await blob.arrayBuffer()));
    return canvas;
  }
}
