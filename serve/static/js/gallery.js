// The tuned videos: id, caption, frames x size, created time and a preview of the source clip (a placeholder
// when the pack has none); a pack the service cannot use shows the one-line reason the API gives.

import { el } from "./dom.js";

export class Gallery {
  constructor(api, container, errorNode) {
    this.api = api;
    this.container = container;
    this.errorNode = errorNode;
    this.previews = new Map(); // video id -> object URL of its preview gif (fetched once, with the token)
    this.videos = [];
  }

  async refresh() {
    try {
      this.videos = (await this.api.json("GET", "/v1/videos")).videos;
      this.errorNode.textContent = "";
    } catch (error) {
      this.errorNode.textContent = error.message;
      return this.videos;
    }
    this.container.replaceChildren(...this.videos.map((video) => this.card(video)));
    if (this.videos.length === 0) this.container.append(el("p", { className: "muted", text: "No videos yet: tune one below." }));
    return this.videos;
  }

  card(video) {
    const card = el("article", { className: "video-card", "data-video-id": video.video_id });
    const media = el("div", { className: "preview placeholder", text: "no preview" });
    card.append(media, el("h3", { className: "video-id", text: video.video_id }));
    if (!video.usable) {
      card.classList.add("unusable");
      card.append(el("p", { className: "error", text: `not usable: ${video.error}` }));
      return card;
    }
    const meta = video.metadata || {};
    const base = meta.base || {};
    card.append(
      el("p", { className: "caption", text: meta.prompt || "(no caption)" }),
      el("p", { className: "muted", text: `${base.frames} frames × ${base.width}×${base.height} · ${video.created || ""}` }),
    );
    if (video.preview) this.showPreview(video, media);
    return card;
  }

  async showPreview(video, media) {
    try {
      const url = await this.previewUrl(video);
      if (url) media.replaceWith(el("img", { className: "preview", src: url, alt: `preview of ${video.video_id}` }));
    } catch (error) {
      media.textContent = `preview unavailable: ${error.message}`;
    }
  }

  async previewUrl(video) {
    if (!video.preview) return null;
    if (!this.previews.has(video.video_id)) this.previews.set(video.video_id, await this.api.objectUrl(video.preview));
    return this.previews.get(video.video_id);
  }

  find(videoId) {
    return this.videos.find((video) => video.video_id === videoId);
  }
}
