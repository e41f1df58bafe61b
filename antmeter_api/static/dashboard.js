// Antmeter dashboard: candles with each champion's predictions, outcomes, accuracy vs baselines.
// Everything comes from the API of the same origin; refreshes every `?refresh=<seconds>` (default 15).
(() => {
  "use strict";
  const LW = window.LightweightCharts;
  const params = new URLSearchParams(location.search);
  const symbol = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const refreshMs = Math.max(0.5, Number(params.get("refresh") || 15)) * 1000;
  const candleLimit = Number(params.get("candles") || 720);
  const palette = ["#4fa3ff", "#f0b429", "#c678dd", "#56b6c2"];
  const baselineColors = { majority: "#8a94a6", persistence: "#e5c07b", oracle: "#98c379" };
  const toSeconds = (iso) => Math.floor(Date.parse(iso) / 1000);

  const state = { symbol, horizon: null, horizons: [], candles: [], predictions: [], outcomes: null,
                  models: null, refreshes: 0, outcomesQuery: null, lastError: null,
                  patterns: { model: null, labels: [], spans: [], disagreements: [], verdicts: {} } };
  let predictionMarkers = [];
  let patternMarkers = [];
  const chart = LW.createChart(document.getElementById("chart"), {
    layout: { background: { color: "#161c24" }, textColor: "#d8dee9" },
    grid: { vertLines: { color: "#1f2630" }, horzLines: { color: "#1f2630" } },
    timeScale: { timeVisible: true, secondsVisible: false },
    leftPriceScale: { visible: true },
    autoSize: true,
  });
  const candleSeries = chart.addSeries(LW.CandlestickSeries, { priceScaleId: "right" });
  const markers = LW.createSeriesMarkers(candleSeries, []);
  const probSeries = {};
  const rollingChart = LW.createChart(document.getElementById("rolling"), {
    layout: { background: { color: "#161c24" }, textColor: "#d8dee9" },
    grid: { vertLines: { visible: false }, horzLines: { color: "#1f2630" } },
    timeScale: { timeVisible: true }, autoSize: true,
  });
  const rollingSeries = {};
  window.antmeter = { state, chart, candleSeries, markers, probSeries, rollingSeries,
                      shownMarkers: () => markers.markers() };

  async function postJSON(path, body, headers = {}) {
    const response = await fetch(path, { method: "POST", body: JSON.stringify(body),
                                         headers: { accept: "application/json", "content-type": "application/json", ...headers } });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${path}: ${response.status} ${answer.detail || ""}`);
    return answer;
  }

  async function getJSON(path) {
    const response = await fetch(path, { headers: { accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.detail || ""}`);
    return body;
  }

  function champions() {
    return (state.models?.models || []).filter((m) => m.champion_version !== null);
  }

  function renderChampions() {
    const root = document.getElementById("champions");
    root.replaceChildren();
    for (const model of state.models?.models || []) {
      const champion = model.versions.find((v) => v.is_champion);
      const div = document.createElement("div");
      div.className = "champion";
      div.dataset.model = model.name;
      if (champion) {
        div.innerHTML = `<b>${model.name}</b> v${champion.version}
          <span class="gate-${champion.gate}">${champion.gate}</span><br>
          <span class="muted small"></span>`;
        div.querySelector(".small").textContent = champion.gate_reason || "";
      } else {
        div.innerHTML = `<b>${model.name}</b> <span class="muted">no champion</span>`;
      }
      root.appendChild(div);
    }
  }

  function renderCandles() {
    candleSeries.setData(state.candles.map((c) => ({ time: toSeconds(c.open_time), open: c.open, high: c.high,
                                                      low: c.low, close: c.close })));
  }

  function renderPredictions() {
    const byModel = {};
    for (const p of state.predictions) (byModel[`${p.model_name} v${p.model_version}`] ||= []).push(p);
    const outcome = new Map((state.outcomes?.outcomes || []).map((o) =>
      [`${o.model_name}|${o.model_version}|${o.prediction_time}|${o.horizon_min}`, o.correct]));
    const legend = [];
    const allMarkers = [];
    Object.entries(byModel).forEach(([key, rows], i) => {
      const color = palette[i % palette.length];
      if (!probSeries[key]) {
        probSeries[key] = chart.addSeries(LW.LineSeries, { priceScaleId: "left", color, lineWidth: 1,
                                                           title: `P(up) ${key}` });
      }
      probSeries[key].setData(rows.map((p) => ({ time: toSeconds(p.prediction_time), value: p.prob_up })));
      legend.push(`<span style="color:${color}">■</span> ${key}: P(up) at ${state.horizon} min (left scale)`);
      for (const p of rows.slice(-240)) {
        const up = p.prob_up >= (p.prob_down ?? 0);
        const correct = outcome.get(`${p.model_name}|${p.model_version}|${p.prediction_time}|${p.horizon_min}`);
        const alpha = Math.round(80 + 175 * Math.min(1, Math.max(0, (p.confidence - 0.5) * 2)))
          .toString(16).padStart(2, "0");
        allMarkers.push({
          time: toSeconds(p.prediction_time),
          position: up ? "belowBar" : "aboveBar",
          shape: up ? "arrowUp" : "arrowDown",
          color: correct === undefined ? `${color}${alpha}` : (correct ? "#6cc070" : "#e06c75"),
          text: correct === undefined ? "" : (correct ? "✓" : "✗"),
          id: `${key}|${p.prediction_time}`,
        });
      }
    });
    predictionMarkers = allMarkers;
    renderMarkers();
    document.getElementById("legend").innerHTML = legend.join(" &nbsp; ") || "no stored predictions yet";
  }

  function renderAccuracy() {
    const body = document.querySelector("#accuracy tbody");
    body.replaceChildren();
    for (const s of state.outcomes?.summary || []) {
      for (const predictor of ["model", "majority", "persistence", "oracle"]) {
        const value = s[`${predictor}_accuracy`];
        if (value === undefined || value === null) continue;
        const tr = document.createElement("tr");
        tr.dataset.model = `${s.model_name}|${s.model_version}`;
        tr.dataset.predictor = predictor;
        tr.dataset.accuracy = String(value);
        tr.dataset.n = String(s.n);
        tr.innerHTML = `<td>${s.model_name} v${s.model_version}</td><td>${predictor}</td>
          <td class="num">${(100 * value).toFixed(1)}%</td><td class="num">${s.n}</td>`;
        body.appendChild(tr);
      }
    }
    const bySeries = {};
    for (const r of state.outcomes?.rolling || []) (bySeries[r.predictor] ||= []).push(r);
    for (const [predictor, rows] of Object.entries(bySeries)) {
      if (!rollingSeries[predictor]) {
        rollingSeries[predictor] = rollingChart.addSeries(LW.LineSeries, {
          color: predictor === "model" ? palette[0] : baselineColors[predictor] || "#aaa", lineWidth: 1, title: predictor });
      }
      const points = new Map(rows.map((r) => [toSeconds(r.window_end), r.accuracy]));
      rollingSeries[predictor].setData([...points].sort((a, b) => a[0] - b[0]).map(([time, value]) => ({ time, value })));
    }
  }

  function renderMarkers() {
    const candleTimes = new Set(state.candles.map((c) => toSeconds(c.open_time)));
    const shown = [...predictionMarkers, ...patternMarkers.filter((m) => candleTimes.has(m.time))];
    markers.setMarkers(shown.sort((a, b) => a.time - b.time));
  }

  // -- chart patterns: predicted spans, disagreements with the annotations, accept / dismiss ---------
  const spanKey = (s) => `${s.start_time}|${s.end_time}|${s.label}`;

  async function loadPatterns() {
    const p = state.patterns;
    if (!p.model) {
      const models = await getJSON("/patterns/models");
      const served = models.models.find((m) => m.champion);
      const status = document.getElementById("pattern-status");
      if (!served) { status.textContent = "no pattern classifier is serving yet"; return; }
      p.model = served.champion;
      p.labels = (await getJSON(`/patterns/labels?kind=${served.kind}`)).labels;
      const select = document.getElementById("pattern-label");
      for (const l of p.labels) select.add(new Option(l.name, l.name));
      select.onchange = renderPatterns;
      document.getElementById("pattern-confidence").onchange = () => loadPatterns().catch(fail);
    }
    const start = state.candles.length ? state.candles[0].open_time : null;
    const minConfidence = Number(document.getElementById("pattern-confidence").value) || 0;
    const body = await postJSON("/patterns/predict", { symbol, kind: p.model.kind, min_confidence: minConfidence,
                                                       ...(start ? { start } : {}) });
    p.spans = body.spans;
    p.disagreements = body.disagreements;
    p.minConfidence = minConfidence;
    renderPatterns();
  }

  function renderPatterns() {
    const p = state.patterns;
    const colour = Object.fromEntries(p.labels.map((l) => [l.name, l.colour]));
    const only = document.getElementById("pattern-label").value;
    const spans = p.spans.filter((s) => !only || s.label === only);
    const against = new Map(p.disagreements.filter((d) => d.predicted_label)
      .map((d) => [`${d.start_time}|${d.end_time}|${d.predicted_label}`, d.kind]));
    patternMarkers = spans.map((s) => ({ time: toSeconds(s.start_time), position: "aboveBar", shape: "square",
      color: colour[s.label] || "#aaa", text: s.label, id: `span|${spanKey(s)}` }));
    renderMarkers();
    const body = document.querySelector("#patterns tbody");
    body.replaceChildren();
    for (const s of spans) {
      const tr = document.createElement("tr");
      const key = spanKey(s);
      const kind = against.get(key) || "";
      Object.assign(tr.dataset, { start: s.start_time, end: s.end_time, label: s.label, disagreement: kind });
      if (kind) tr.classList.add("disagreement");
      tr.innerHTML = `<td><span style="color:${colour[s.label] || "#aaa"}">■</span> ${s.label}</td>
        <td>${s.start_time.slice(0, 16)}</td><td>${s.end_time.slice(11, 16)}</td><td class="num">${s.candles}</td>
        <td class="num">${(100 * s.confidence).toFixed(0)}%</td><td>${kind.replaceAll("_", " ")}</td><td></td>`;
      const verdict = tr.lastElementChild;
      if (p.verdicts[key]) {
        verdict.textContent = p.verdicts[key];
      } else {
        for (const [text, accepted] of [["accept", true], ["dismiss", false]]) {
          const button = document.createElement("button");
          button.textContent = text;
          button.className = text;
          button.onclick = () => sendVerdict(s, accepted).catch(fail);
          verdict.appendChild(button);
        }
      }
      body.appendChild(tr);
    }
    document.getElementById("pattern-status").textContent =
      `${p.model.name} v${p.model.version}: ${spans.length} spans, ${against.size} unlike the annotations`;
  }

  async function sendVerdict(span, accepted) {
    const token = document.getElementById("operator-token").value.trim();
    const status = document.getElementById("pattern-status");
    if (!token) { status.textContent = "enter the operator token to save a verdict"; return; }
    await postJSON("/patterns/feedback", { symbol, start_time: span.start_time, end_time: span.end_time,
                                           label: span.label, accepted }, { authorization: `Bearer ${token}` });
    state.patterns.verdicts[spanKey(span)] = accepted ? "accepted" : "dismissed";
    renderPatterns();
    status.textContent = `saved: ${span.label} ${span.start_time.slice(11, 16)} ${accepted ? "accepted" : "dismissed"}`;
  }

  function fail(error) {
    state.lastError = String(error);
    document.getElementById("pattern-status").textContent = `patterns: ${error.message}`;
  }

  function renderGauge() {
    const newest = state.predictions[state.predictions.length - 1];
    const fill = document.getElementById("gauge-fill");
    const text = document.getElementById("gauge-value");
    const info = document.getElementById("newest");
    if (!newest) { text.textContent = "–"; info.textContent = "no prediction yet"; return; }
    const c = Math.min(1, Math.max(0, newest.confidence));
    const angle = Math.PI * (1 - c);
    fill.setAttribute("d", `M 20 100 A 80 80 0 0 1 ${100 + 80 * Math.cos(angle)} ${100 - 80 * Math.sin(angle)}`);
    text.textContent = `${(100 * c).toFixed(1)}%`;
    const up = newest.prob_up >= (newest.prob_down ?? 0);
    info.dataset.predictionTime = newest.prediction_time;
    info.textContent = `${newest.model_name} v${newest.model_version}: ${up ? "up" : "down"} within ` +
      `${newest.horizon_min} min, as of ${newest.prediction_time}`;
  }

  async function refresh() {
    try {
      if (!state.models) {
        state.models = await getJSON("/models");
        const labels = champions().length ? await getJSON(`/model/labels?model=${encodeURIComponent(champions()[0].name)}`) : null;
        state.horizons = labels ? labels.horizons : [];
        state.horizon = Number(params.get("horizon")) || state.horizons[0] || 5;
        const select = document.getElementById("horizon");
        for (const h of state.horizons) select.add(new Option(`${h} min`, h, false, h === state.horizon));
        select.onchange = () => { state.horizon = Number(select.value); refresh(); };
        renderChampions();
      }
      const candles = await getJSON(`/candles?symbol=${symbol}&limit=${candleLimit}`);
      state.candles = candles.candles;
      const start = state.candles.length ? state.candles[0].open_time : null;
      const window = start ? `&start=${encodeURIComponent(start)}` : "";
      const predictions = await getJSON(`/predictions?symbol=${symbol}&horizon=${state.horizon}${window}&limit=5000`);
      state.predictions = predictions.predictions;
      state.outcomesQuery = `/outcomes?symbol=${symbol}&horizon=${state.horizon}${window}&limit=5000`;
      state.outcomes = await getJSON(state.outcomesQuery);
      renderCandles();
      renderPredictions();
      renderAccuracy();
      renderGauge();
      await loadPatterns();
      state.refreshes += 1;
      state.lastError = null;
      document.getElementById("status").textContent =
        `${state.candles.length} candles, ${state.predictions.length} predictions, ` +
        `${state.outcomes.count} verified · updated ${new Date().toISOString().slice(11, 19)} UTC`;
    } catch (error) {
      state.lastError = String(error);
      document.getElementById("status").textContent = `update failed: ${error.message}`;
    }
  }

  document.getElementById("symbol").textContent = symbol;
  refresh();
  setInterval(refresh, refreshMs);
})();
