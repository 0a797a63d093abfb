// Tuning: the upload form, then every job live (polled from GET /v1/jobs): state and stage, steps, the loss
// curve, elapsed time and what remains, why a queued job waits, a cancel button; done jobs refresh the gallery.

import { el, seconds } from "./dom.js";
import { drawLoss } from "./lossplot.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "running"]);

export class Jobs {
  constructor(api, container, { onDone }) {
    this.api = api;
    this.container = container;
    this.onDone = onDone;
    this.cards = new Map(); // job id -> { card, parts, state }
    this.timer = null;
  }

  async submit(form, errorNode, button) {
    errorNode.textContent = "";
    button.disabled = true;
    try {
      const data = new FormData(form);
      for (const [name, value] of [...data.entries()]) if (value === "") data.delete(name); // the API's default
      const job = await this.api.json("POST", "/v1/videos", {
        form: data,
        onBusy: (wait, message) => { errorNode.textContent = `busy, retrying in ${wait} s (${message})`; },
      });
      errorNode.textContent = "";
      form.reset();
      this.show(job);
      this.poll();
    } catch (error) {
      errorNode.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  async poll() {
    clearTimeout(this.timer);
    try {
      const jobs = (await this.api.json("GET", "/v1/jobs")).jobs.filter((job) => job.kind === "tune");
      jobs.forEach((job) => this.show(job));
      // newest first, as listed; moving the cards keeps their canvases
      this.container.replaceChildren(...jobs.map((job) => this.cards.get(job.job_id).card));
    } catch (error) {
      if (error.status === 401) return; // the token panel is showing
    }
    const active = [...this.cards.values()].some((entry) => ACTIVE.has(entry.state));
    this.timer = setTimeout(() => this.poll(), active ? POLL_MS : POLL_MS * 5);
  }

  show(job) {
    let entry = this.cards.get(job.job_id);
    if (!entry) {
      entry = this.newCard(job);
      this.cards.set(job.job_id, entry);
      this.container.prepend(entry.card);
    }
    const wasActive = ACTIVE.has(entry.state);
    entry.state = job.state;
    this.update(entry.parts, job);
    if (wasActive && job.state === "done") this.onDone(job);
  }

  newCard(job) {
    const parts = {
      state: el("span", { className: "state" }),
      steps: el("progress", { max: 1, value: 0 }),
      stepText: el("span", { className: "steps" }),
      inversion: el("span", { className: "inversion muted" }),
      times: el("span", { className: "times muted" }),
      scheduling: el("p", { className: "scheduling muted" }),
      error: el("p", { className: "error" }),
      loss: el("canvas", { className: "loss", width: 320, height: 120 }),
      cancel: el("button", { type: "button", className: "cancel", text: "Cancel" }),
    };
    parts.cancel.addEventListener("click", () => this.cancel(job.job_id, parts));
    const card = el("article", { className: "job-card", "data-job-id": job.job_id },
      el("h4", {}, el("span", { className: "video-id", text: job.video_id }), " ",
        el("span", { className: "muted", text: `job ${job.job_id}` })),
      el("p", { className: "caption", text: job.options?.prompt || "" }),
      el("p", {}, parts.state, " ", parts.steps, " ", parts.stepText, " ", parts.inversion),
      el("p", {}, parts.times), parts.scheduling, parts.loss, parts.error, parts.cancel);
    return { card, parts, state: job.state };
  }

  update(parts, job) {
    const { step, total } = job.progress || { step: 0, total: 0 };
    parts.state.textContent = job.state === job.stage ? job.state : `${job.state} · ${job.stage}`;
    parts.state.dataset.state = job.state;
    parts.steps.max = Math.max(total, 1);
    parts.steps.value = step;
    parts.stepText.textContent = `step ${step} / ${total}`;
    parts.inversion.textContent = job.inversion ? `inversion ${job.inversion.step} / ${job.inversion.total}` : "";
    parts.times.textContent = `elapsed ${seconds(job.elapsed_s)} · remaining ${
      ACTIVE.has(job.state) ? seconds(job.remaining_s) : "–"}`;
    parts.scheduling.textContent = job.scheduling || "";
    parts.error.textContent = job.error || "";
    parts.cancel.hidden = !ACTIVE.has(job.state);
    drawLoss(parts.loss, job.loss_curve);
  }

  async cancel(jobId, parts) {
    parts.cancel.disabled = true;
    try {
      this.show(await this.api.json("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`));
    } catch (error) {
      parts.error.textContent = error.message;
    } finally {
      parts.cancel.disabled = false;
    }
  }
}
