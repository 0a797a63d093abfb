// The studio: ask for the token once (kept in sessionStorage), then the gallery, tuning jobs and edits, all on the
// public REST API. A wrong token sends the user back to the token field.

import { Api } from "./api.js";
import { Editor } from "./edit.js";
import { Gallery } from "./gallery.js";
import { Jobs } from "./jobs.js";

const $ = (id) => document.getElementById(id);

const api = new Api({ onUnauthorized: askForToken });
const gallery = new Gallery(api, $("gallery"), $("videos-error"));
const editor = new Editor(api, gallery, $("results"));
const jobs = new Jobs(api, $("jobs"), { onDone: () => refreshVideos() });

function askForToken(message) {
  $("studio").hidden = true;
  $("token-panel").hidden = false;
  $("change-token").hidden = true;
  $("token-error").textContent = message || "";
  $("token-input").focus();
}

async function refreshVideos() {
  const videos = await gallery.refresh();
  const select = document.querySelector("#edit-form select[name=video_id]");
  const chosen = select.value;
  select.replaceChildren(...videos.filter((v) => v.usable).map((v) => new Option(v.video_id, v.video_id)));
  if (chosen) select.value = chosen;
}

function fillDefaults(form, defaults) {
  for (const [name, value] of Object.entries(defaults)) {
    const field = form.elements.namedItem(name);
    if (field && "value" in field && !(field instanceof RadioNodeList)) {
      if (field instanceof HTMLSelectElement) field.value = value;
      else field.defaultValue = String(value); // the default also after form.reset()
      field.placeholder = String(value);
    }
  }
}

async function start() {
  let service;
  try {
    service = await api.json("GET", "/v1/service");
  } catch (error) {
    if (error.status !== 401) $("token-error").textContent = error.message;
    return; // a 401 has shown the token panel
  }
  $("token-panel").hidden = true;
  $("studio").hidden = false;
  $("change-token").hidden = !api.token;
  const { base } = service;
  $("service-info").textContent = `base: ${base.frames} frames × ${base.width}×${base.height}, ${base.precision}` +
    (service.tuning ? "" : " · tuning is off on this server");
  fillDefaults($("tune-form"), service.defaults.tune);
  fillDefaults($("edit-form"), service.defaults.generate);
  $("tune-form").querySelector("button").disabled = !service.tuning;
  await refreshVideos();
  jobs.poll();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.setToken($("token-input").value.trim());
  $("token-input").value = "";
  start();
});
$("change-token").addEventListener("click", () => {
  api.forgetToken();
  askForToken("");
});
$("refresh-videos").addEventListener("click", () => refreshVideos());
$("tune-form").addEventListener("submit", (event) => {
  event.preventDefault();
  jobs.submit(event.target, $("tune-error"), event.submitter);
});
$("edit-form").addEventListener("submit", (event) => {
  event.preventDefault();
  editor.submit(event.target, $("edit-error"), event.submitter);
});

start();
