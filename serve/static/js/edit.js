// Editing: one to four prompts for a tuned video. Each runs as an async generate job, so its card shows the steps
// as they go (and can be cancelled); the result then plays beside the source clip's preview, with its per-stage
// timings and a download link; "another seed" is one click.

import { el, seconds } from "./dom.js";
import { animateFrames, parseNpy } from "./npy.js";

const EXTENSIONS = { mp4: "mp4", gif: "gif", npy: "npy" };
const POLL_MS = 500;
const FINISHED = new Set(["done", "failed", "cancelled"]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

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
    const status = el("p", { className: "status muted", text: "queued…" });
    const bar = el("progress", { max: request.steps || 1, value: 0 });
    const cancel = el("button", { type: "button", className: "cancel", text: "Cancel", hidden: true });
    const running = el("div", { className: "running" }, bar, " ", status, " ", cancel);
    const card = el("article", { className: "result-card", "data-result": String(this.count) },
      el("h4", {}, el("span", { className: "prompt", text: request.prompt })),
      el("p", { className: "muted", text: `${videoId} · seed ${request.seed ?? "default"} · ${request.format}` }),
      running);
    this.container.prepend(card);
    try {
      const job = await this.api.json("POST", `/v1/videos/${encodeURIComponent(videoId)}/generate`, {
        json: { ...request, async: true },
        onBusy: (wait, message) => { status.textContent = `busy, retrying in ${wait} s (${message})`; },
      });
      card.dataset.jobId = job.job_id;
      cancel.hidden = false;
      cancel.addEventListener("click", () => this.api.request("DELETE", job.status_url).catch((error) => {
        status.textContent = error.message;
      }));
      const record = await this.follow(job, bar, status);
      if (record.state !== "done") throw new Error(record.error || `the job was ${record.state}`);
      const blob = await (await this.api.request("GET", record.result.url)).blob();
      running.replaceWith(await this.resultView(videoId, request, record.result.timings, blob));
      card.dataset.done = "true";
    } catch (error) {
      cancel.hidden = true;
      status.className = "error";
      status.textContent = error.message;
      card.dataset.done = "error";
    }
  }

  // Poll the job's record until it ends: the bar follows its steps.
  async follow(job, bar, status) {
    for (;;) {
      const record = await this.api.json("GET", job.status_url);
      bar.max = Math.max(record.progress.total, 1);
      bar.value = record.progress.step;
      status.textContent = `${record.stage} · step ${record.progress.step} / ${record.progress.total}` +
        (record.remaining_s ? ` · about ${seconds(record.remaining_s)} left` : "");
      if (FINISHED.has(record.state)) return record;
      await sleep(POLL_MS);
    }
  }

  async resultView(videoId, request, timings, blob) {
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
    const name = `${videoId}-seed${request.seed ?? 0}.${EXTENSIONS[request.format]}`;
    const again = el("button", { type: "button", className: "another-seed", text: "Same prompt, another seed" });
    again.addEventListener("click", () => this.generate(videoId, { ...request, seed: (request.seed ?? 0) + 1 }));
    return el("div", { className: "result" },
      el("div", { className: "side-by-side" }, el("figure", {}, source, el("figcaption", { text: "source" })),
        el("figure", {}, media, el("figcaption", { text: "edit" }))),
      el("p", { className: "timings muted",
        text: Object.entries(timings).map(([stage, s]) => `${stage} ${seconds(s)}`).join(" · ") }),
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
