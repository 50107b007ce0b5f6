"""The Retention page: what a night produced, for whom, and why; server-rendered HTML.

A plain FastAPI app that imports no Airflow: ``plugins/retention_ui.py`` mounts it in Airflow's
api-server under ``/retention`` and hands it the api-server's authentication as FastAPI
dependencies (``require_user`` on every route). It is never served without them.

Routes (relative, so that the page works under any prefix and behind a reverse proxy):

* ``./?night=YYYY-MM-DD&q=customer id or address``: the page;
* ``./message/{outbox_id}``: one message as sent (headers, text, and the HTML in a sandboxed frame);
* ``./message/{outbox_id}/html``: the HTML part alone, served with a CSP sandbox (no scripts);
* ``./templates?occasion=&language=``: the template editor (live preview, save, history, restore);
* ``./templates/preview``, ``save``, ``restore``, ``rerender`` (JSON posts) and
  ``./templates/version/{id}`` (a saved version's source);
* ``./tomorrow?night=YYYY-MM-DD&q=...``: the forecast of the next night (``retention.forecast``);
* ``./feedback?weeks=26&page=0``: answers to the feedback message: ratings per week, per product
  category and per lifecycle phase, the comments (newest first, paged) and the open follow-ups;
* ``./app.js``: the page's small script (night picker, table filter, editor).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from retention import template_store
from retention.db import engine_for
from retention.registry import template_folder
from retention.segments import ABC_CLASSES, LIFECYCLE_PHASES, RFM_SEGMENTS
from retention.settings import Settings
from retention.web import editor, queries

__all__ = ["create_retention_app"]


class Pair(BaseModel):
    """One template: an occasion in a language."""

    occasion: str = Field(max_length=32)
    language: str = Field(max_length=8)


class Draft(Pair):
    """A template draft to preview or save."""

    source: str
    customer_id: int | None = Field(None, ge=0)


class Restore(Pair):
    """An earlier version to make live again (0: the shipped file)."""

    version_id: int = Field(ge=0)


#: The page may load its own script and style, frame its own message view, and nothing else.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
#: A message's HTML is shown as sent but can run nothing and reach nothing (images stay off too).
MESSAGE_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

SCRIPT = r"""
// The Retention page's script: the night picker submits itself; tables can be filtered.
document.querySelectorAll("select[data-autosubmit]").forEach((el) =>
  el.addEventListener("change", () => el.form.submit()));
// The template editor: a debounced live preview (lint problems at their lines, subject, HTML, text).
const editor = document.getElementById("source");
if (editor) {
  const gutter = document.getElementById("gutter");
  const problems = document.getElementById("problems");
  const numbers = (bad) => editor.value.split("\n").map((_, i) =>
    bad.has(i + 1) ? `<span class="bad">${i + 1}</span>` : `${i + 1}`).join("\n");
  const paint = (bad) => { gutter.innerHTML = numbers(bad); gutter.scrollTop = editor.scrollTop; };
  editor.addEventListener("scroll", () => { gutter.scrollTop = editor.scrollTop; });
  const goTo = (line) => {
    const lines = editor.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    editor.focus(); editor.setSelectionRange(start, start + (lines[line - 1] || "").length);
  };
  let timer = null, sequence = 0;
  const refresh = async () => {
    const mine = ++sequence;
    document.getElementById("status").textContent = "checking…";
    const reply = await fetch("templates/preview", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({occasion: editor.dataset.occasion, language: editor.dataset.language,
                            source: editor.value, customer_id: document.getElementById("customer").value || null}),
    });
    if (mine !== sequence) return;  // a newer edit is on its way
    const data = await reply.json();
    if (!reply.ok) { document.getElementById("status").textContent = data.detail || "preview failed"; return; }
    problems.innerHTML = "";
    const bad = new Set();
    for (const p of data.problems) {
      if (p.line && p.file === editor.dataset.file) bad.add(p.line);
      const item = document.createElement("li");
      item.className = p.severity;
      item.dataset.line = p.line || "";
      item.textContent = `${p.file}${p.line ? ":" + p.line : ""}: ${p.severity}: ${p.message}`;
      item.addEventListener("click", () => p.line && goTo(p.line));
      problems.appendChild(item);
    }
    paint(bad);
    document.getElementById("status").textContent = data.ok ? "no problems" : `${data.problems.length} problem(s)`;
    if (data.ok) {
      document.getElementById("preview-subject").textContent = data.subject;
      document.getElementById("preview-html").srcdoc = data.html;
      document.getElementById("preview-text").textContent = data.text;
    }
  };
  editor.addEventListener("input", () => { paint(new Set()); clearTimeout(timer); timer = setTimeout(refresh, 600); });
  document.getElementById("customer").addEventListener("change", refresh);
  // Save, restore, render the queue again: JSON posts (a cross-site form cannot send them).
  const post = async (path, body) => {
    const reply = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({occasion: editor.dataset.occasion,
                                                           language: editor.dataset.language, ...body})});
    return [reply, await reply.json()];
  };
  const saved = (reply, data) => {
    if (reply.ok) { window.location.reload(); return; }
    const status = document.getElementById("status");
    status.textContent = typeof data.detail === "string" ? data.detail : (data.detail.message || "not saved");
    if (data.detail && data.detail.problems) {
      problems.innerHTML = "";
      const bad = new Set();
      for (const p of data.detail.problems) {
        if (p.line) bad.add(p.line);
        const item = document.createElement("li");
        item.className = p.severity;
        item.textContent = `${p.file}${p.line ? ":" + p.line : ""}: ${p.severity}: ${p.message}`;
        problems.appendChild(item);
      }
      paint(bad);
    }
  };
  const save = document.getElementById("save");
  if (save) save.addEventListener("click", async () => saved(...await post("templates/save", {source: editor.value})));
  document.querySelectorAll("button.restore").forEach((button) => button.addEventListener("click", async () =>
    saved(...await post("templates/restore", {version_id: Number(button.dataset.version)}))));
  const again = document.getElementById("rerender");
  if (again) again.addEventListener("click", async () => {
    const [reply, data] = await post("templates/rerender", {});
    document.getElementById("queued").textContent = reply.ok
      ? `${data.rerendered} queued message(s) rendered again` + (data.claimed ? `, ${data.claimed} already being sent` : "")
      : (data.detail || "failed");
  });
  document.getElementById("download").addEventListener("click", () => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([editor.value], {type: "text/plain"}));
    link.download = `${editor.dataset.language}.jinja`;
    link.click();
  });
  paint(new Set());
  refresh();
}
document.querySelectorAll("input[data-filter]").forEach((input) => {
  const rows = document.querySelectorAll(`#${input.dataset.filter} tbody tr`);
  input.addEventListener("input", () => {
    const needle = input.value.trim().toLowerCase();
    rows.forEach((row) => { row.hidden = needle && !row.textContent.toLowerCase().includes(needle); });
  });
});
"""

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_ENV.filters["pct"] = lambda x: "–" if x is None else f"{x * 100:.1f} %"
_ENV.filters["signed_pct"] = lambda x: "–" if x is None else f"{x * 100:+.1f} pp"

_BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 0; padding: 1rem 1.5rem; color: #1d2330; background: #fafbfc; }
 h1 { font-size: 1.4rem; margin: .2rem 0 1rem; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .6rem; }
 section { background: #fff; border: 1px solid #e1e4e8; border-radius: 6px; padding: .8rem 1rem; margin-bottom: 1rem; }
 table { border-collapse: collapse; font-size: .9rem; } td, th { padding: .2rem .6rem; text-align: left;
   border-bottom: 1px solid #eef0f2; vertical-align: top; } th { font-weight: 600; }
 td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
 .charts { display: flex; flex-wrap: wrap; gap: 2rem; } .chart { min-width: 18rem; }
 .bar { background: #2f6fb3; height: .9rem; border-radius: 2px; display: inline-block; vertical-align: middle; }
 .o-sent { color: #1a7f37; } .o-failed, .o-unknown { color: #cf222e; font-weight: 600; } .o-skipped { color: #6e7781; }
 pre { white-space: pre-wrap; background: #f6f8fa; padding: .6rem; border-radius: 4px; font-size: .85rem; }
 iframe { width: 100%; height: 32rem; border: 1px solid #d0d7de; border-radius: 4px; background: #fff; }
 .muted { color: #6e7781; } form.inline { display: inline; }
 .editor { display: flex; gap: 1rem; align-items: flex-start; } .editor > div { flex: 1; min-width: 0; }
 .code { display: flex; border: 1px solid #d0d7de; border-radius: 4px; background: #fff; }
 #gutter { margin: 0; padding: .4rem .5rem; text-align: right; color: #8c959f; background: #f6f8fa;
   overflow: hidden; height: 36rem; font: 13px/1.4 monospace; white-space: pre; border-radius: 4px 0 0 4px; }
 #gutter .bad { color: #fff; background: #cf222e; border-radius: 2px; padding: 0 2px; }
 #source { flex: 1; height: 36rem; border: 0; padding: .4rem; font: 13px/1.4 monospace; resize: vertical; white-space: pre; }
 #problems li.error { color: #cf222e; cursor: pointer; } #problems li.warning { color: #9a6700; cursor: pointer; }
 nav.tabs a { margin-right: 1rem; }
 .notice { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 4px; padding: .5rem .7rem; }
</style>
<script src="{{ root }}app.js" defer></script></head>
<body>{{ body }}</body></html>
"""

_PAGE = """
<h1>Retention</h1>
<!--nav-->
<section>
<form method="get" class="inline">
 <label>Night <select name="night" id="night" data-autosubmit>
 {% for n in nights %}<option value="{{ n }}" {{ "selected" if n == night }}>{{ n }}</option>{% endfor %}
 </select></label>
 <noscript><button>Show</button></noscript>
</form>
{% if not nights %}<p class="muted">No night has run yet.</p>{% endif %}
</section>
{% if night %}
<section id="segments"><h2>Customers on {{ night }}</h2>
<div class="charts">
{% for title, key, order in charts %}
 <div class="chart"><h3>{{ title }}</h3><table>
 {% set counts = segments[key] %}{% set top = (counts.values() | max) if counts else 1 %}
 {% for value in order if value in counts %}
  <tr><td>{{ value }}</td><td class="n">{{ counts[value] }}</td>
  <td><span class="bar" style="width: {{ (160 * counts[value] / top) | round | int }}px"></span></td></tr>
 {% endfor %}
 </table>{% if not counts %}<p class="muted">no snapshot for this night</p>{% endif %}</div>
{% endfor %}
</div>
<h3>Lifecycle flows since the night before</h3>
{% if flows %}<table id="flows"><thead><tr><th>from</th><th>to</th><th class="n">customers</th></tr></thead><tbody>
{% for a, b, n in flows %}<tr><td>{{ a }}</td><td>{{ b }}</td><td class="n">{{ n }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">No moves between phases (or no earlier night to compare).</p>{% endif %}
</section>

<section id="occasions"><h2>Occasions of the night and what became of them</h2>
<p>{% for outcome, n in outcome_totals %}<span class="o-{{ outcome }}">{{ outcome }} {{ n }}</span>{{ " · " if not loop.last }}{% endfor %}</p>
<input type="search" placeholder="filter" data-filter="occasions-table">
<table id="occasions-table"><thead><tr><th>occasion</th><th>language</th><th>outcome</th><th>reason</th><th class="n">count</th></tr></thead><tbody>
{% for r in outcomes %}<tr><td>{{ r.occasion }}</td><td>{{ r.language }}</td><td class="o-{{ r.outcome }}">{{ r.outcome }}</td>
<td>{{ r.reason }}</td><td class="n">{{ r.count }}</td></tr>{% endfor %}
</tbody></table>{% if not outcomes %}<p class="muted">No occasions on this night.</p>{% endif %}
</section>

<section id="outbox"><h2>Outbox</h2>
<form method="get"><input type="hidden" name="night" value="{{ night }}">
 <input type="search" name="q" id="q" value="{{ q }}" placeholder="customer id or address" size="32"> <button>Search</button></form>
{% if q and not customer %}<p class="muted">No customer or message for “{{ q }}”.</p>{% endif %}
{% if customer %}
 {% set p = customer.person %}{% set s = customer.segment %}
 <h3>Customer {{ customer.customer_id }}{% if p %}: {{ p.first_name }} {{ p.last_name or "" }} &lt;{{ p.email }}&gt;{% endif %}</h3>
 {% if p %}<p>language {{ p.language }}, time zone {{ p.time_zone }}, marketing consent {{ "yes" if p.marketing_consent else "no" }}</p>
 <p id="unsubscribed">{% if customer.suppressed %}Address suppressed ({{ customer.suppressed }}): no messages at all.{% endif %}
 {% if customer.stopped_kinds %}Stopped on the unsubscribe page: {% for k in customer.stopped_kinds %}<b>{{ k.kind }}</b> (since {{ k.since }}){{ ", " if not loop.last }}{% endfor %}.
 {% elif not customer.suppressed %}<span class="muted">Receives every kind of message.</span>{% endif %}</p>{% endif %}
 {% if s %}<p id="customer-segment">On {{ night }}: RFM <b>{{ s.rfm_segment }}</b> (R{{ s.r_score or "–" }} F{{ s.f_score or "–" }} M{{ s.m_score or "–" }}),
  class <b>{{ s.abc_class }}</b>, phase <b>{{ s.lifecycle_phase }}</b>{% if s.unprofitable %}, unprofitable{% endif %}</p>{% endif %}
 <h4>Recent occasions</h4><table><thead><tr><th>date</th><th>occasion</th><th>language</th><th>status</th><th>reason</th></tr></thead><tbody>
 {% for o in customer.occasions %}<tr><td>{{ o.occasion_date }}</td><td>{{ o.occasion }}</td><td>{{ o.language }}</td><td>{{ o.status }}</td><td>{{ o.reason or "" }}</td></tr>{% endfor %}
 </tbody></table>
 <h4>Messages</h4><table id="messages"><thead><tr><th>date</th><th>occasion</th><th>subject</th><th>status</th><th>sent</th><th></th></tr></thead><tbody>
 {% for m in customer.messages %}<tr><td>{{ m.occasion_date }}</td><td>{{ m.occasion }}</td><td>{{ m.subject }}</td><td class="o-{{ m.status }}">{{ m.status }}</td>
 <td>{{ m.sent_at or "" }}</td><td><a href="{{ root }}message/{{ m.outbox_id }}">open</a></td></tr>{% endfor %}
 </tbody></table>
{% endif %}
</section>

<section id="holdout"><h2>Holdout uplift</h2>
<p class="muted">Share of customers who bought again within N days of the occasion, messaged versus holdout
(only occasions whose N days have passed count). The interval is a 95 % Newcombe score interval of the difference.</p>
<table id="uplift"><thead><tr><th>occasion</th><th class="n">days</th><th class="n">messaged</th><th class="n">of them observed</th><th class="n">bought</th><th class="n">rate</th>
<th class="n">holdout</th><th class="n">of them observed</th><th class="n">bought</th><th class="n">rate</th><th class="n">uplift</th><th>95 % interval</th></tr></thead><tbody>
{% for u in uplift or [] %}<tr><td>{{ u.occasion }}</td><td class="n">{{ u.days }}</td>
<td class="n">{{ u.messaged_customers }}</td><td class="n">{{ u.messaged_n }}</td><td class="n">{{ u.messaged_bought }}</td><td class="n">{{ u.messaged_rate | pct }}</td>
<td class="n">{{ u.holdout_customers }}</td><td class="n">{{ u.holdout_n }}</td><td class="n">{{ u.holdout_bought }}</td><td class="n">{{ u.holdout_rate | pct }}</td>
<td class="n">{{ u.uplift | signed_pct }}</td>
<td>{% if u.low is not none %}{{ u.low | signed_pct }} to {{ u.high | signed_pct }}{% else %}<span class="muted">not enough data yet</span>{% endif %}</td></tr>{% endfor %}
</tbody></table>{% if uplift is none %}<p class="muted" id="uplift-pending">Being computed over every occasion up to
{{ night }}: reload the page in a few seconds.</p>{% elif not uplift %}<p class="muted">No messaged or holdout occasions yet.</p>{% endif %}
</section>

<section id="quarantine"><h2>Quarantine of the night</h2>
{% for q in quarantine %}<h3>{{ q.rule }}: {{ q.count }}</h3><table><thead><tr><th>table</th><th>key</th><th>why</th><th>row</th></tr></thead><tbody>
 {% for e in q.examples %}<tr><td>{{ e.source_table }}</td><td>{{ e.source_key }}</td><td>{{ e.detail }}</td><td><code>{{ e.raw | tojson }}</code></td></tr>{% endfor %}
 </tbody></table>{% else %}<p class="muted">Nothing held back on this night.</p>{% endfor %}
</section>
{% endif %}
"""

_EDITOR = """
<h1>Templates</h1>
<!--nav-->
<section>
<form method="get" action="templates" class="inline">
 <label>Occasion <select name="occasion" id="occasion" data-autosubmit>
 {% for o in occasions %}<option {{ "selected" if o == occasion }}>{{ o }}</option>{% endfor %}</select></label>
 <label>Language <select name="language" id="language" data-autosubmit>
 {% for lang in languages %}<option {{ "selected" if lang == language }}>{{ lang }}</option>{% endfor %}</select></label>
 <noscript><button>Open</button></noscript>
</form>
<label>Preview for customer id <input id="customer" size="10" placeholder="sample"></label>
<span id="status" class="muted"></span>
</section>
<div class="editor">
 <div><h2>{{ file }}</h2>
  <div class="code"><pre id="gutter"></pre><textarea id="source" spellcheck="false" data-file="{{ file }}"
   data-occasion="{{ occasion }}" data-language="{{ language }}">{{ source }}</textarea></div>
  <ul id="problems"></ul>
  {% if frozen %}
  <p id="frozen" class="notice">Templates are frozen in this deployment (<code>RETENTION_TEMPLATES_FROZEN</code>): the
  night renders the files baked into the image, so nothing can be saved here. <button type="button" id="download">Download
  the edited file</button> and put it into <code>templates/{{ file }}</code> for the next image.</p>
  {% else %}
  <p>Live: <b id="live-version">{{ live.label }}</b>{% if live.saved_by != "shipped" %}, saved by {{ live.saved_by }}
  on {{ live.saved_at.strftime("%Y-%m-%d %H:%M") }} UTC{% endif %}.
  {% if may_save %}<button type="button" id="save">Save</button>{% else %}<span class="muted" id="no-save">Saving needs the
  template editor permission.</span>{% endif %}
  <button type="button" id="download">Download</button></p>
  <p id="queued">{{ stale }} queued message(s) of {{ occasion }} in {{ language }} were rendered from another version.
  {% if may_save and stale %}<button type="button" id="rerender">Render them again</button>{% endif %}</p>
  <h3>History</h3>
  <table id="history"><thead><tr><th>version</th><th>saved (UTC)</th><th>by</th><th>note</th><th></th></tr></thead><tbody>
  {% for v in history %}<tr data-version="{{ v.version_id }}"><td>{{ v.version_id }}{{ " (live)" if v.version_id == live.version_id }}</td>
   <td>{{ v.saved_at.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ v.saved_by }}</td><td>{{ v.note or "" }}</td>
   <td><a href="templates/version/{{ v.version_id }}">source</a>{% if may_save and v.version_id != live.version_id %}
   <button type="button" class="restore" data-version="{{ v.version_id }}">Restore</button>{% endif %}</td></tr>{% endfor %}
   <tr data-version="0"><td>shipped file{{ " (live)" if live.version_id == 0 }}</td><td></td><td></td><td><code>templates/{{ file }}</code></td>
   <td>{% if may_save and live.version_id != 0 %}<button type="button" class="restore" data-version="0">Restore</button>{% endif %}</td></tr>
  </tbody></table>
  {% endif %}
 </div>
 <div><h2>Preview{{ " of variant a" if variant_b }}</h2><p><b>Subject:</b> <span id="preview-subject"></span></p>
  <iframe id="preview-html" sandbox title="HTML part"></iframe><pre id="preview-text"></pre></div>
</div>
{% if variant_b %}
<section id="variant-b"><h2>Variant b: <code>templates/{{ variant_b.file }}</code></h2>
<p class="muted">Half of the {{ language }} customers get this wording instead (a stable hash of customer and occasion);
the Earnings tab compares what the two bring. Edit it in the templates folder; a variant with lint errors is not sent
(its customers get variant a).</p>
<div class="editor">
 <div><pre id="variant-b-source">{{ variant_b.source }}</pre>
  <ul id="variant-b-problems">{% for p in variant_b.problems %}<li class="{{ p.severity }}">{{ p.file }}{{ ":" ~ p.line if p.line }}: {{ p.severity }}: {{ p.message }}</li>{% endfor %}</ul></div>
 <div><p><b>Subject:</b> <span id="variant-b-subject">{{ variant_b.subject or "" }}</span></p>
  <iframe id="variant-b-html" sandbox title="HTML part of variant b" srcdoc="{{ variant_b.html or "" }}"></iframe>
  <pre id="variant-b-text">{{ variant_b.text or "" }}</pre></div>
</div>
</section>
{% endif %}
"""

_EARNINGS = """
<h1>What retention earns</h1>
<!--nav-->
<section>
<form method="get" class="inline"><label>Days after the occasion <select name="days" id="days" data-autosubmit>
{% for n in ("30", "60", "90") %}<option {{ "selected" if n == days }}>{{ n }}</option>{% endfor %}</select></label>
<noscript><button>Show</button></noscript></form>
<p class="muted">As of night {{ e.night }}. Messaged (selected for a message) against the holdout, over the occasions whose
{{ days }} days have passed: who bought again, and revenue and margin per customer in those days (kept items). Differences
with a {{ (e.confidence * 100) | round | int }} % {{ e.interval }} interval; cost {{ e.message_cost }} per message
(<code>RETENTION_MESSAGE_COST</code>); return = (incremental margin − cost) / cost.</p>
<table id="earnings"><thead><tr><th>occasion</th><th>month</th><th class="n">messaged</th><th class="n">held out</th>
<th class="n">bought again</th><th class="n">revenue / customer</th><th class="n">margin / customer</th>
<th class="n">margin uplift</th><th>interval</th><th class="n">cost</th><th class="n">incremental margin</th><th class="n">return</th></tr></thead><tbody>
{% for occasion, block in e.occasions.items() %}
 {% for month, b in [("all", block.total)] + (block.months.items() | list) %}{% set h = b.horizons[days] %}
 <tr{% if month != "all" %} class="muted"{% endif %}><td>{{ occasion if month == "all" }}</td><td>{{ month }}</td>
 <td class="n">{{ h.messaged.customers }}</td><td class="n">{{ h.holdout.customers }}</td>
 <td class="n">{{ h.messaged.repeat_rate | pct }} vs {{ h.holdout.repeat_rate | pct }}</td>
 <td class="n">{{ h.messaged.revenue_per_customer }} vs {{ h.holdout.revenue_per_customer }}</td>
 <td class="n">{{ h.messaged.margin_per_customer }} vs {{ h.holdout.margin_per_customer }}</td>
 <td class="n">{{ h.margin_per_customer_uplift if h.margin_per_customer_uplift is not none else "–" }}</td>
 <td>{% if h.margin_per_customer_interval %}{{ h.margin_per_customer_interval[0] }} to {{ h.margin_per_customer_interval[1] }}{% else %}<span class="muted">not enough data</span>{% endif %}</td>
 <td class="n">{{ h.cost }}</td><td class="n">{{ h.incremental_margin if h.incremental_margin is not none else "–" }}</td>
 <td class="n">{{ "%+.1f×" | format(h.return_on_cost) if h.return_on_cost is not none else "–" }}</td></tr>
 {% endfor %}
{% endfor %}
</tbody></table>{% if not e.occasions %}<p class="muted">No messaged or held-out occasions yet.</p>{% endif %}
</section>
"""

_FEEDBACK = """
<style>td.comment { white-space: pre-wrap; max-width: 40rem; }</style>
<h1>Feedback</h1>
<!--nav-->
<section id="feedback-ratings"><h2>Ratings</h2>
{% if not since %}<p class="muted" id="no-feedback">No answers to the feedback message yet.</p>{% else %}
<form method="get" class="inline"><label>Weeks <select name="weeks" id="weeks" data-autosubmit>
{% for n in (4, 13, 26, 52, 104) %}<option {{ "selected" if n == weeks }}>{{ n }}</option>{% endfor %}</select></label>
<noscript><button>Show</button></noscript></form>
<span class="muted">since {{ since.date() }} (weeks start on Monday, UTC). Ratings of {{ low }} or less are low: they open a
follow-up and hold back product suggestions for {{ hold_days }} nights.</span>
<div class="charts">
<div class="chart"><h3>Per week</h3><table id="feedback-weeks"><thead><tr><th>week of</th><th class="n">answers</th>
<th class="n">average</th>{% for n in range(1, 6) %}<th class="n">{{ n }}★</th>{% endfor %}<th></th></tr></thead><tbody>
{% for w in by_week %}<tr><td>{{ w.week }}</td><td class="n">{{ w.answers }}</td><td class="n">{{ "%.2f" | format(w.average) }}</td>
{% for n in w.ratings %}<td class="n">{{ n }}</td>{% endfor %}
<td><span class="bar" style="width: {{ (w.average * 24) | round | int }}px"></span></td></tr>{% endfor %}
</tbody></table></div>
<div class="chart"><h3>By product category</h3><table id="feedback-categories"><thead><tr><th>category</th>
<th class="n">answers</th><th class="n">average</th></tr></thead><tbody>
{% for c in by_category %}<tr><td>{{ c.category }}</td><td class="n">{{ c.answers }}</td><td class="n">{{ "%.2f" | format(c.average) }}</td></tr>{% endfor %}
</tbody></table></div>
<div class="chart"><h3>By lifecycle phase</h3><table id="feedback-phases"><thead><tr><th>phase at the answer</th>
<th class="n">answers</th><th class="n">average</th></tr></thead><tbody>
{% for p in by_phase %}<tr><td>{{ p.phase }}</td><td class="n">{{ p.answers }}</td><td class="n">{{ "%.2f" | format(p.average) }}</td></tr>{% endfor %}
</tbody></table></div>
</div>{% endif %}
</section>

<section id="feedback-followups"><h2>Open follow-ups</h2>
{% if not service_address %}<p class="notice" id="no-service-address">No service address is set
(<code>RETENTION_SERVICE_ADDRESS</code>): follow-ups are not mailed, only listed here{% if unmailed %}
({{ unmailed }} waiting){% endif %}.</p>{% endif %}
{% if followups %}<table id="followups"><thead><tr><th>answered (UTC)</th><th>customer</th><th>order</th><th class="n">rating</th>
<th>comment</th><th>mailed (UTC)</th></tr></thead><tbody>
{% for f in followups %}<tr><td>{{ f.created_at }}</td><td><a href="./?q={{ f.customer_id }}">{{ f.customer_id }}</a></td>
<td>{{ f.order_id }}</td><td class="n">{{ f.rating }}</td><td>{{ f.comment or "" }}</td><td>{{ f.mailed_at or "not yet" }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">No open follow-ups.</p>{% endif %}
</section>

<section id="feedback-comments"><h2>Comments</h2>
{% if comments %}<table id="comments"><thead><tr><th>changed (UTC)</th><th>customer</th><th>order</th><th class="n">rating</th>
<th>comment</th></tr></thead><tbody>
{% for c in comments %}<tr><td>{{ c.updated_at }}</td><td><a href="./?q={{ c.customer_id }}">{{ c.customer_id }}</a></td>
<td>{{ c.order_id }}</td><td class="n">{{ c.rating or "–" }}</td><td class="comment">{{ c.comment }}</td></tr>{% endfor %}
</tbody></table>{% else %}<p class="muted">No comments{{ " on this page" if page }}.</p>{% endif %}
<p>{% if page %}<a id="newer" href="./feedback?weeks={{ weeks }}&page={{ page - 1 }}">← newer</a>{% endif %}
{% if more %}<a id="older" href="./feedback?weeks={{ weeks }}&page={{ page + 1 }}">older →</a>{% endif %}</p>
</section>
"""

_EARNINGS_PENDING = """
<h1>What retention earns</h1>
<!--nav-->
<section><p id="pending">The figures of night {{ night }} are being computed (they read every occasion and the orders
after it); reload in a minute.</p></section>
"""

_MESSAGE = """
<p><a href="{{ root }}?night={{ m.occasion_date }}&q={{ m.customer_id }}">← back to customer {{ m.customer_id }}</a></p>
<h1 id="subject">{{ m.subject }}</h1>
<table>
<tr><th>To</th><td>{{ m.email }}</td></tr><tr><th>Occasion</th><td>{{ m.occasion }} ({{ m.language }}), {{ m.occasion_date }}</td></tr>
<tr><th>Message-ID</th><td>{{ m.message_id }}</td></tr><tr><th>Status</th><td>{{ m.status }}{% if m.smtp_reply %}: {{ m.smtp_reply }}{% endif %}</td></tr>
<tr><th>Send at (UTC)</th><td>{{ m.send_at }}</td></tr><tr><th>Sent (UTC)</th><td>{{ m.sent_at or "–" }}</td></tr>
<tr><th>Template</th><td><code>{{ m.template_hash }}</code>{% if m.template_version_id %}, saved version {{ m.template_version_id }}{% endif %}{% if m.variant %}, variant <b id="variant">{{ m.variant }}</b>{% endif %}</td></tr>
</table>
<h2>HTML part</h2><iframe src="{{ root }}message/{{ m.outbox_id }}/html" sandbox title="HTML part"></iframe>
<h2>Text part</h2><pre id="text">{{ m.text_body }}</pre>
"""


_TOMORROW = """
<h1>Tomorrow</h1>
<!--nav-->
<section id="forecast"><h2>What night {{ f.night }} will decide</h2>
<p>A forecast, computed now from the warehouse as it is after night {{ f.based_on or "–" }}; nothing was written
({{ "%.2f" | format(f.seconds) }} s{% if f.projected_snapshot %}, facts and segments projected to the night{% endif %}).</p>
<p>{% for status, n in f.totals().items() %}<span class="o-{{ status }}">{{ status }} {{ n }}</span>{{ " · " if not loop.last }}{% endfor %}</p>
<table id="forecast-counts"><thead><tr><th>occasion</th><th>language</th><th>status</th><th class="n">count</th></tr></thead><tbody>
{% for o, lang, status, n in f.counts() %}<tr><td>{{ o }}</td><td>{{ lang }}</td><td class="o-{{ status }}">{{ status }}</td><td class="n">{{ n }}</td></tr>{% endfor %}
</tbody></table>{% if not f.rows %}<p class="muted">No candidates for this night.</p>{% endif %}
<h3>How exact</h3><table id="forecast-notes"><tbody>
{% for o, note in f.notes.items() %}<tr><td>{{ o }}</td><td>{{ "exact" if o in exact else "estimate" }}</td><td>{{ note }}</td></tr>{% endfor %}
</tbody></table><p class="muted">{{ common_note }}</p>
</section>
<section id="forecast-list"><h2>Candidates</h2>
<form method="get"><input type="hidden" name="night" value="{{ f.night }}">
 <input type="search" name="q" value="{{ q }}" placeholder="customer id, occasion, status, reason" size="36"> <button>Search</button></form>
<p class="muted">{{ shown | length }} of {{ matching }} matching candidates{% if q %} (of {{ f.rows | length }}){% endif %}.</p>
<input type="search" placeholder="filter these rows" data-filter="forecast-rows">
<table id="forecast-rows"><thead><tr><th>customer</th><th>occasion</th><th>language</th><th>date</th><th>status</th><th>reason</th></tr></thead><tbody>
{% for r in shown %}<tr><td><a href="./?q={{ r.customer_id }}">{{ r.customer_id }}</a></td><td>{{ r.occasion }}</td><td>{{ r.language }}</td>
<td>{{ r.occasion_date }}</td><td class="o-{{ r.status }}">{{ r.status }}</td><td>{{ r.reason or "" }}</td></tr>{% endfor %}
</tbody></table>
</section>
"""


#: The tabs every page shows (``<!--nav-->`` in a page template).
_NAV = (
    '<nav class="tabs"><a href="./">Nights</a><a href="./templates">Templates</a>'
    '<a href="./tomorrow">Tomorrow</a><a href="./earnings">Earnings</a><a href="./feedback">Feedback</a></nav>'
)


@functools.cache
def _compiled(template: str) -> jinja2.Template:
    return _ENV.from_string(template.replace("<!--nav-->", _NAV))


def _render(title: str, template: str, root: str, **context: Any) -> HTMLResponse:
    body = _compiled(template).render(root=root, **context)
    page = _compiled(_BASE).render(title=title, root=root, body=jinja2.utils.markupsafe.Markup(body))
    return HTMLResponse(page, headers=PAGE_HEADERS)


def _night(value: str | None, known: Sequence[dt.date]) -> dt.date | None:
    if value:
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise HTTPException(400, f"night={value!r} is not a date (YYYY-MM-DD)") from None
    return known[0] if known else None


def _page_context(engine: Engine, night: dt.date | None, q: str) -> dict:
    with engine.connect() as conn:
        context: dict = {"nights": queries.nights(conn), "night": night, "q": q, "customer": None}
        if night is None:
            return context
        outcomes = queries.occasion_outcomes(conn, night)
        totals: dict[str, int] = {}
        for row in outcomes:
            totals[row["outcome"]] = totals.get(row["outcome"], 0) + row["count"]
        customer_id = queries.find_customer(conn, q) if q else None
        context.update(
            segments=queries.segment_counts(conn, night),
            flows=queries.lifecycle_flows(conn, night),
            outcomes=outcomes,
            outcome_totals=sorted(totals.items(), key=lambda kv: queries.OUTCOMES.index(kv[0])),
            customer=queries.customer_view(conn, customer_id, night) if customer_id is not None else None,
            uplift=queries.cached_uplift(engine, night),  # None: still being computed (1M customers)
            quarantine=queries.quarantine_by_rule(conn, night),
            charts=(
                ("RFM segment", "rfm", RFM_SEGMENTS),
                ("ABC class", "abc", ABC_CLASSES),
                ("Lifecycle phase", "lifecycle", LIFECYCLE_PHASES),
            ),
        )
    # A night picked by hand that is not in the list still shows (e.g. an older night).
    if night not in context["nights"]:
        context["nights"] = sorted([*context["nights"], night], reverse=True)
    return context


def create_retention_app(
    require_user: Callable[..., Any],
    settings: Settings | None = None,
    engine: Engine | None = None,
    editor_name: Callable[[Any], str | None] | None = None,
    secret: Callable[[], bytes] | None = None,
) -> FastAPI:
    """The Retention page app.

    ``require_user`` is a FastAPI dependency that refuses anonymous requests and returns the
    user; ``editor_name(user)`` names a user who may save templates (``None``: may not; when
    not given, nobody may); ``secret()`` gives the unsubscribe signing secret that re-rendered
    messages' links need.
    """
    settings = settings or Settings()
    engine = engine or engine_for(settings.warehouse)
    app = FastAPI(
        title="Retention",
        dependencies=[Depends(require_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _night_routes(app, engine)
    _earnings_route(app, settings, engine)
    _feedback_route(app, settings, engine)
    _tomorrow_routes(app, settings, engine)
    _template_routes(app, settings, engine, require_user, editor_name or (lambda _user: None), secret)

    @app.get("/app.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    return app


def _earnings_route(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """What retention earns, per occasion and month (``retention.earnings``), as of the latest night."""
    from retention.earnings import earnings

    # Like the holdout uplift, it reads every occasion and the orders after it: on a large
    # warehouse it is computed once per night and state in the background, and the page says so.
    report = queries.BackgroundReport(
        lambda conn, night: earnings(
            conn, night, settings.message_cost, min_sample=settings.variant_min_sample
        )
    )

    @app.get("/earnings", response_class=HTMLResponse)
    def earnings_page(days: str = "90", night: str | None = None) -> HTMLResponse:
        if days not in ("30", "60", "90"):
            raise HTTPException(400, "days must be 30, 60 or 90")
        with engine.connect() as conn:
            known = queries.nights(conn)
        chosen = _night(night, known)
        if chosen is None:
            raise HTTPException(404, "no night has run yet")
        figures = report.get(engine, chosen, patience=5.0)
        if figures is None:
            return _render("Earnings", _EARNINGS_PENDING, "./", night=chosen)
        return _render("Earnings", _EARNINGS, "./", e=figures, days=days)


def _feedback_route(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """``./feedback``: what customers answered to the feedback message (``retention.feedback``)."""
    from retention.feedback import pending_followups

    @app.get("/feedback", response_class=HTMLResponse)
    def feedback_tab(weeks: int = 26, page: int = 0) -> HTMLResponse:
        if not 1 <= weeks <= 520 or page < 0:
            raise HTTPException(400, "weeks must be 1 to 520 and page 0 or more")
        with engine.connect() as conn:
            since = queries.feedback_since(conn, weeks)
            comments, more = queries.feedback_comments(conn, page)
            context = {
                "since": since,
                "weeks": weeks,
                "page": page,
                "more": more,
                "comments": comments,
                "by_week": queries.feedback_weeks(conn, since) if since else [],
                "by_category": queries.feedback_by_category(conn, since) if since else [],
                "by_phase": queries.feedback_by_phase(conn, since) if since else [],
                "followups": queries.open_followups(conn),
                "unmailed": pending_followups(conn),
                "service_address": settings.service_address,
                "low": settings.feedback_low_rating,
                "hold_days": settings.feedback_hold_days,
            }
        return _render("Feedback", _FEEDBACK, "./", **context)


def _night_routes(app: FastAPI, engine: Engine) -> None:
    """The page of a night, and the messages it links to."""

    @app.get("/", response_class=HTMLResponse)
    def page(night: str | None = None, q: str = "") -> HTMLResponse:
        with engine.connect() as conn:
            known = queries.nights(conn)
        context = _page_context(engine, _night(night, known), q.strip())
        return _render("Retention", _PAGE, "./", **context)

    @app.get("/message/{outbox_id}", response_class=HTMLResponse)
    def message_page(outbox_id: int) -> HTMLResponse:
        with engine.connect() as conn:
            row = queries.message(conn, outbox_id)
        if row is None:
            raise HTTPException(404, f"no message {outbox_id} in the outbox")
        return _render(row["subject"], _MESSAGE, "../", m=row)

    @app.get("/message/{outbox_id}/html", response_class=HTMLResponse)
    def message_html(outbox_id: int) -> HTMLResponse:
        with engine.connect() as conn:
            row = queries.message(conn, outbox_id)
        if row is None:
            raise HTTPException(404, f"no message {outbox_id} in the outbox")
        return HTMLResponse(row["html_body"], headers=MESSAGE_HEADERS)


def _tomorrow_routes(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """``./tomorrow``: the forecast of the next night (retention.forecast), computed on request."""
    from retention import forecast as fc
    from retention.night import night_for_date

    @app.get("/tomorrow", response_class=HTMLResponse)
    def tomorrow(night: str | None = None, q: str = "", limit: int = 500) -> HTMLResponse:
        try:
            chosen = night_for_date(night, settings.time_zone) if night else fc.next_night(engine, settings)
        except ValueError as exc:
            raise HTTPException(400 if night else 404, str(exc)) from None
        result = fc.forecast(engine, chosen, settings)
        needle = q.strip().lower()
        matching = [
            r
            for r in result.rows
            if not needle
            or needle == str(r.customer_id)
            or any(needle in (v or "").lower() for v in (r.occasion, r.language, r.status, r.reason))
        ]
        return _render(
            "Tomorrow",
            _TOMORROW,
            "./",
            f=result,
            exact=result.exact,
            common_note=fc.COMMON_NOTE,
            q=q.strip(),
            matching=len(matching),
            shown=matching[: max(limit, 0)],
        )


def _template_routes(
    app: FastAPI,
    settings: Settings,
    engine: Engine,
    require_user: Callable[..., Any],
    editor_name: Callable[[Any], str | None],
    secret: Callable[[], bytes] | None,
) -> None:
    """The template editor: source, live preview, save with history and restore, and re-rendering
    the queue. Saving needs ``editor_name(user)`` to name the user (else 403)."""

    known = _known_template(settings)
    _template_write_routes(app, settings, engine, _saver(settings, require_user, editor_name), known, secret)

    @app.get("/templates", response_class=HTMLResponse)
    def templates_page(
        occasion: str = "thank_you",
        language: str | None = None,
        user: Any = Depends(require_user),  # noqa: B008 (FastAPI's idiom)
    ) -> HTMLResponse:
        language = language or settings.default_language
        known(occasion, language)
        live = template_store.current(engine, settings, occasion, language)
        shipped = editor.available_templates(settings)
        with engine.connect() as conn:
            stale = queries.stale_queued(conn, occasion, language, live.version_id or None)
        return _render(
            "Templates",
            _EDITOR,
            "./",
            occasions=list(dict.fromkeys(o for o, _ in shipped)),
            languages=sorted({lang for o, lang in shipped if o == occasion}),
            occasion=occasion,
            language=language,
            file=f"{occasion}/{language}.jinja",
            source=live.source,
            live=live,
            history=[] if settings.templates_frozen else template_store.history(engine, occasion, language),
            frozen=settings.templates_frozen,
            may_save=bool(editor_name(user)) and not settings.templates_frozen,
            stale=stale,
            variant_b=_variant_b(settings, engine, occasion, language),
        )

    @app.get("/templates/version/{version_id}")
    def template_version(version_id: int) -> Response:
        try:
            saved = template_store.version(engine, version_id)
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip("'\"")) from None
        return Response(saved.source, media_type="text/plain; charset=utf-8", headers=PAGE_HEADERS)

    @app.post("/templates/preview")
    def template_preview(draft: Draft) -> dict:
        if len(draft.source.encode()) > settings.template_max_bytes:
            raise HTTPException(413, f"the template is larger than {settings.template_max_bytes} bytes")
        try:
            result = editor.preview_draft(
                settings, draft.occasion, draft.language, draft.source, draft.customer_id, engine
            )
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip("'")) from None
        return {**dataclasses.asdict(result), "ok": result.ok}


def _variant_b(settings: Settings, engine: Engine, occasion: str, language: str) -> dict | None:
    """Variant b of a template, with its preview for the sample customer; None without one."""
    path = template_folder(occasion, settings) / f"{language}.b.jinja"
    if not path.is_file():
        return None
    source = path.read_text(encoding="utf-8")
    shown = editor.preview_draft(settings, occasion, language, source, engine=engine, variant="b")
    return {"file": f"{occasion}/{language}.b.jinja", "source": source, **dataclasses.asdict(shown)}


def _saver(
    settings: Settings, require_user: Callable[..., Any], editor_name: Callable[[Any], str | None]
) -> Callable[..., str]:
    """The dependency of every route that changes something: the saving user's name, or a 4xx."""

    def saver(request: Request, user: Any = Depends(require_user)) -> str:  # noqa: B008 (FastAPI)
        # A JSON body only: a cross-site form cannot send one without the browser asking first.
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "send the request as application/json")
        name = editor_name(user)
        if not name:
            raise HTTPException(403, "this user may not save templates (the template editor permission)")
        if settings.templates_frozen:
            raise HTTPException(
                409, "templates are frozen in this deployment (RETENTION_TEMPLATES_FROZEN): download the file"
            )
        return name

    return saver


def _known_template(settings: Settings) -> Callable[[str, str], None]:
    def known(occasion: str, language: str) -> None:
        try:
            template_store.shipped_source(settings, occasion, language)
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip("'\"")) from None

    return known


def _template_write_routes(
    app: FastAPI,
    settings: Settings,
    engine: Engine,
    saver: Callable[..., str],
    known: Callable[[str, str], None],
    secret: Callable[[], bytes] | None,
) -> None:
    """Save, restore, and render the queue again: each needs ``saver`` (a user who may save)."""

    def saved_reply(result: tuple[template_store.Version, bool]) -> dict:
        version, new = result
        with engine.connect() as conn:
            stale = queries.stale_queued(conn, version.occasion, version.language, version.version_id or None)
        return {"version_id": version.version_id, "label": version.label, "new": new, "stale_queued": stale}

    @app.post("/templates/save")
    def template_save(draft: Draft, name: str = Depends(saver)) -> dict:  # noqa: B008
        known(draft.occasion, draft.language)
        if len(draft.source.encode()) > settings.template_max_bytes:
            raise HTTPException(413, f"the template is larger than {settings.template_max_bytes} bytes")
        try:
            result = template_store.save(
                engine,
                settings,
                draft.occasion,
                draft.language,
                draft.source,
                name,
                now=dt.datetime.now(dt.UTC),
            )
        except template_store.LintFailed as failed:
            raise HTTPException(422, {"message": str(failed), "problems": failed.problems}) from None
        return saved_reply(result)

    @app.post("/templates/restore")
    def template_restore(choice: Restore, name: str = Depends(saver)) -> dict:  # noqa: B008
        known(choice.occasion, choice.language)
        try:
            result = template_store.restore(
                engine,
                settings,
                choice.version_id,
                name,
                occasion=choice.occasion,
                language=choice.language,
                now=dt.datetime.now(dt.UTC),
            )
        except KeyError as exc:
            raise HTTPException(404, str(exc).strip("'\"")) from None
        except template_store.LintFailed as failed:  # e.g. a variable the occasion no longer has
            raise HTTPException(422, {"message": str(failed), "problems": failed.problems}) from None
        return saved_reply(result)

    @app.post("/templates/rerender")
    def template_rerender(pair: Pair, name: str = Depends(saver)) -> dict:  # noqa: B008
        from retention.outbox import rerender

        known(pair.occasion, pair.language)
        if secret is None:
            raise HTTPException(503, "no unsubscribe signing secret is configured on this server")
        return rerender(engine, settings, secret(), pair.occasion, pair.language)
