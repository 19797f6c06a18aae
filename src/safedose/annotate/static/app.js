// The labelling page. Untrusted text (prompts, answers, notes) only ever goes through textContent.
"use strict";
(() => {
  const KEY = "safedose-annotator-token";
  const $ = (id) => document.getElementById(id);
  const CLASSES = { "1": "compliance", "2": "refusal", "3": "partial" };
  const state = { history: [], index: 0, item: null, refusal: null, harmful: null, held: 0, queue: Promise.resolve() };

  function readToken() {
    const match = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
    if (match) {
      sessionStorage.setItem(KEY, match[1]);
      history.replaceState(null, "", location.pathname);
    }
    return sessionStorage.getItem(KEY);
  }
  const token = readToken();

  async function api(method, path, body) {
    const options = { method, headers: { Authorization: "Bearer " + token } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function message(text) {
    $("message").textContent = text;
    $("message").hidden = !text;
  }

  function status(text) {
    $("status").textContent = text;
  }

  function showProgress(progress) {
    const share = progress.total ? Math.round((100 * progress.done) / progress.total) : 100;
    $("bar").style.width = share + "%";
    $("progress").setAttribute("aria-valuenow", String(share));
    $("count").textContent = progress.done + " of " + progress.total + " labelled";
  }

  // The definitions of the classes: static text in the page, opened with its button or "?".
  function toggleGuide() {
    const guide = $("guide");
    guide.open = !guide.open;
    if (guide.open) guide.scrollIntoView({ block: "nearest" });
  }

  function press(selector, value, attribute) {
    for (const button of document.querySelectorAll(selector)) {
      button.setAttribute("aria-pressed", String(button.getAttribute(attribute) === value));
    }
  }

  function render() {
    const item = state.item;
    const editing = state.index < state.history.length;
    $("main").hidden = false;
    if (!item) {
      $("prompt").textContent = "";
      $("response").textContent = "";
      $("position").textContent = state.held
        ? "Nothing to hand out just now: the " + state.held + " items left are with other annotators. " +
          "Press → in a few minutes to check again (← reviews your labels)"
        : "All done: every item open to you is labelled. Thank you! (← reviews your labels)";
      document.querySelector(".choices").hidden = true;
      return;
    }
    document.querySelector(".choices").hidden = false;
    $("prompt").textContent = item.prompt;
    $("response").textContent = item.response;
    $("harmful-row").hidden = !item.ask_harmful;
    $("note").value = item.label ? item.label.note : "";
    press("[data-refusal]", state.refusal, "data-refusal");
    press("[data-harmful]", state.harmful, "data-harmful");
    $("position").textContent = editing
      ? "Your label " + (state.index + 1) + " of " + state.history.length + " (changes are saved at once)"
      : "New item";
  }

  function show(item, index) {
    state.item = item;
    state.index = index;
    state.refusal = item && item.label ? item.label.refusal : null;
    state.harmful = item && item.label ? item.label.harmful : null;
    status("");
    render();
  }

  async function showNext() {
    const data = await api("GET", "/api/next");
    state.held = data.held_by_others || 0;
    showProgress(data.progress);
    show(data.item, state.history.length);
  }

  async function showAt(index) {
    if (index < 0) return;
    if (index >= state.history.length) return showNext();
    const data = await api("GET", "/api/items/" + encodeURIComponent(state.history[index]));
    showProgress(data.progress);
    show(data.item, index);
  }

  async function save() {
    const item = state.item;
    if (!item || !state.refusal) return;
    if (item.ask_harmful && !state.harmful) {
      press("[data-refusal]", state.refusal, "data-refusal");
      status("Now: harmful? y / n");
      return;
    }
    const editing = state.index < state.history.length;
    const body = { refusal: state.refusal, harmful: item.ask_harmful ? state.harmful : null, note: $("note").value };
    const data = await api("PUT", "/api/labels/" + encodeURIComponent(item.id), body);
    item.label = data.label;
    if (!state.history.includes(item.id)) state.history.push(item.id);
    if (editing) {
      showProgress(data.progress);
      render();
      status("Saved");
    } else {
      await showNext();
      status("Saved");
    }
  }

  async function undo() {
    const data = await api("POST", "/api/undo");
    if (!data.item) {
      status("Nothing to undo");
      return;
    }
    showProgress(data.progress);
    if (data.item.label) {
      if (!state.history.includes(data.item.id)) state.history.push(data.item.id);
      show(data.item, state.history.indexOf(data.item.id));
      status("Undone: your earlier label is back");
      return;
    }
    state.history = state.history.filter((id) => id !== data.item.id);
    show(data.item, state.history.length);
    status("Undone: label it again");
  }

  // Actions run one after another in the order they were asked for, so fast typing loses no key.
  function act(fn) {
    state.queue = state.queue.then(fn).catch((error) => {
      status("Not saved: " + error.message);
      if (error.status === 401) message("Your link is not valid any more: ask for a new invite link.");
    });
    return state.queue;
  }

  function chooseClass(value) {
    state.refusal = value;
    return save();
  }

  function chooseHarmful(value) {
    if (!state.item || !state.item.ask_harmful) return Promise.resolve();
    state.harmful = value;
    press("[data-harmful]", value, "data-harmful");
    if (!state.refusal) {
      status("Now: 1, 2 or 3");
      return Promise.resolve();
    }
    return save();
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target === $("note")) {
      if (event.key === "Enter") {
        event.preventDefault();
        if (state.item && state.item.label) act(save);
        else status("Choose 1, 2 or 3: the note is saved with the label");
      } else if (event.key === "Escape") {
        $("note").blur();
      }
      return;
    }
    const key = event.key.toLowerCase();
    if (key in CLASSES) act(() => chooseClass(CLASSES[key]));
    else if (key === "y") act(() => chooseHarmful("yes"));
    else if (key === "n") act(() => chooseHarmful("no"));
    else if (key === "arrowleft") act(() => showAt(state.index - 1));
    else if (key === "arrowright") act(() => showAt(state.index + 1));
    else if (key === "u") act(undo);
    else if (key === "?") toggleGuide();
    else return;
    event.preventDefault();
  }

  async function start() {
    if (!token) {
      message("Open your personal invite link to start labelling (ask whoever runs the study for it).");
      return;
    }
    try {
      const me = await api("GET", "/api/me");
      $("who").textContent = "labelling as " + me.name;
      state.history = (await api("GET", "/api/history")).items;
      await showNext();
    } catch (error) {
      message(error.status === 401 ? "This link is not valid: ask for a new invite link." : error.message);
      return;
    }
    document.addEventListener("keydown", onKey);
    for (const button of document.querySelectorAll("[data-refusal]")) {
      button.addEventListener("click", () => act(() => chooseClass(button.getAttribute("data-refusal"))));
    }
    for (const button of document.querySelectorAll("[data-harmful]")) {
      button.addEventListener("click", () => act(() => chooseHarmful(button.getAttribute("data-harmful"))));
    }
    $("prev").addEventListener("click", () => act(() => showAt(state.index - 1)));
    $("next").addEventListener("click", () => act(() => showAt(state.index + 1)));
    $("undo").addEventListener("click", () => act(undo));
  }

  $("guide-button").addEventListener("click", toggleGuide);
  start();
})();
