// InferexAI operator console (/ops).
//
// The operator signs in with their own operator token and a code from their authenticator (TOTP): the token
// is sent once, to POST /v1/admin/sessions, and never kept. The session it answers is kept in sessionStorage
// (this tab only) and sent as `Authorization: Bearer <session>` on every /v1/admin call; no cookie is
// involved (credentials: "omit"). Tabs the operator's roles do not allow are hidden.
// Everything the API returns (names, e-mails, notes, references) is attacker-controlled text: the DOM is
// built with createElement + textContent only, never innerHTML. Money is integer maths on BigInt (wallet
// units: 1 rupee = 10^9, 1 paisa = 10^7), shown as ₹ with Indian grouping; times are shown in IST.
"use strict";

(() => {
  const TOKEN_KEY = "inferex_ops_token";
  const NAME_KEY = "inferex_ops_operator";
  const ROLES_KEY = "inferex_ops_roles";
  /** The role each tab's routes need (shared::operators::OPERATOR_ROUTES). */
  const TAB_ROLES = { kyc: "kyc_reviewer", refunds: "payments", reviews: "payments", disputes: "payments" };
  const PAGE_SIZE = 20;
  const MAX_TEXT = 500;
  const UNITS_PER_RUPEE = 1000000000n;
  const UNITS_PER_PAISA = 10000000n;
  const I64_MAX = 9223372036854775807n;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers (no innerHTML, ever)

  /** Creates an element; `attrs` are set with setAttribute (or as `text` / `className`), children are
   *  nodes or strings (strings become text nodes). */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [name, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (name === "text") node.textContent = String(value);
        else if (name === "className") node.className = value;
        else node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    if (children) {
      for (const child of children) {
        if (child === undefined || child === null || child === false) continue;
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  }

  function setHidden(node, hidden) {
    if (!node) return;
    node.classList.toggle("hidden", hidden);
    node.hidden = hidden;
  }

  let idCounter = 0;
  const uid = (prefix) => `${prefix}-${++idCounter}`;

  const DASH = "—";

  // ---------------------------------------------------------------- formatting

  const dateTimeIst = new Intl.DateTimeFormat("en-IN", {
    timeZone: "Asia/Kolkata",
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
  });
  // Calendar dates (date of birth) carry no time zone: format them as the date they name.
  const calendarDate = new Intl.DateTimeFormat("en-IN", {
    timeZone: "UTC",
    day: "numeric",
    month: "short",
    year: "numeric",
  });
  const grouping = new Intl.NumberFormat("en-IN");

  function istText(value) {
    if (value === undefined || value === null || value === "") return DASH;
    const date = new Date(String(value));
    if (Number.isNaN(date.getTime())) return String(value);
    return `${dateTimeIst.format(date)} IST`;
  }

  /** A <time> element showing an API timestamp in IST. */
  function timeEl(value) {
    if (value === undefined || value === null || value === "") return document.createTextNode(DASH);
    const iso = String(value);
    return el("time", { datetime: iso, title: iso, text: istText(iso) });
  }

  function calendarDateText(value) {
    const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(value || ""));
    if (!match) return value ? String(value) : DASH;
    const date = new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])));
    return calendarDate.format(date);
  }

  /** Wallet units (BigInt) -> "₹1,23,456.78" (at least two decimals, every significant one kept). */
  function formatUnits(units) {
    if (typeof units !== "bigint") return DASH;
    const negative = units < 0n;
    const abs = negative ? -units : units;
    const rupees = abs / UNITS_PER_RUPEE;
    const fraction = (abs % UNITS_PER_RUPEE).toString().padStart(9, "0");
    let decimals = fraction.replace(/0+$/, "");
    if (decimals.length < 2) decimals = fraction.slice(0, 2);
    return `${negative ? "-" : ""}₹${grouping.format(rupees)}.${decimals}`;
  }

  /** An API amount in wallet units: exact from its decimal rupee string (`amount_inr`) when there is one,
   *  else from the integer when it is safely representable. Null when neither is usable. */
  function unitsOf(amount, amountInr) {
    if (typeof amountInr === "string") {
      const parsed = parseDecimalRupees(amountInr, true);
      if (parsed !== null) return parsed;
    }
    if (typeof amount === "number" && Number.isSafeInteger(amount)) return BigInt(amount);
    return null;
  }

  /** A rupee amount typed as text ("1,234.50", "₹ 99", "0.000000005") -> wallet units as BigInt, exactly:
   *  digits are handled as strings, never as floating point. Null when it is not an amount. */
  function parseDecimalRupees(text, allowNegative) {
    const cleaned = String(text).replace(/[\s,₹]/g, "");
    const match = /^(-?)(\d{1,10})(?:\.(\d{1,9}))?$/.exec(cleaned);
    if (!match) return null;
    if (match[1] && !allowNegative) return null;
    const units = BigInt(match[2]) * UNITS_PER_RUPEE + BigInt((match[3] || "").padEnd(9, "0"));
    return match[1] ? -units : units;
  }

  const humanKey = (key) => String(key).replace(/_paise$/, "").replace(/_/g, " ");

  // ---------------------------------------------------------------- flash and inline field errors

  function flash(text, kind) {
    const box = $("ops-flash");
    box.textContent = "";
    box.className = `flash ${kind === "error" ? "error" : "ok"}`;
    // A fresh text node so screen readers announce a repeated message too.
    box.append(document.createTextNode(text));
  }

  function clearFlash() {
    const box = $("ops-flash");
    box.textContent = "";
    box.className = "flash";
  }

  function fieldError(input, message) {
    const errorId = `${input.id}-error`;
    let note = document.getElementById(errorId);
    if (!note) {
      note = el("p", { id: errorId, className: "field-error error" });
      input.insertAdjacentElement("afterend", note);
    }
    note.textContent = message;
    input.setAttribute("aria-invalid", "true");
    const described = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    if (!described.includes(errorId)) described.push(errorId);
    input.setAttribute("aria-describedby", described.join(" "));
    input.focus();
  }

  function clearFieldError(input) {
    if (!input || !input.id) return;
    const note = document.getElementById(`${input.id}-error`);
    if (note) note.remove();
    input.removeAttribute("aria-invalid");
    const described = (input.getAttribute("aria-describedby") || "")
      .split(/\s+/)
      .filter((id) => id && id !== `${input.id}-error`);
    if (described.length) input.setAttribute("aria-describedby", described.join(" "));
    else input.removeAttribute("aria-describedby");
  }

  document.addEventListener("input", (event) => {
    if (event.target instanceof HTMLElement && event.target.getAttribute("aria-invalid") === "true") {
      clearFieldError(event.target);
    }
  });

  // ---------------------------------------------------------------- the operator's session (this tab only)

  let memoryToken = "";

  function getToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || memoryToken;
    } catch (_) {
      return memoryToken;
    }
  }

  function setToken(token) {
    memoryToken = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      /* storage disabled: the session lives in memory until the page closes */
    }
  }

  function forgetSession() {
    memoryToken = "";
    try {
      sessionStorage.removeItem(TOKEN_KEY);
      sessionStorage.removeItem(NAME_KEY);
      sessionStorage.removeItem(ROLES_KEY);
    } catch (_) {
      /* nothing stored */
    }
  }

  function storedOperatorName() {
    try {
      return sessionStorage.getItem(NAME_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  /** The server records every action under the name the session belongs to; its answers (revealed_to,
   *  decided_by, paid_by, handled.by) tell us that name, shown in #ops-who. */
  function noteOperator(name) {
    if (typeof name !== "string" || !name) return;
    try {
      sessionStorage.setItem(NAME_KEY, name);
    } catch (_) {
      /* shown for this page only */
    }
    showWho();
  }

  function storedRoles() {
    try {
      const roles = JSON.parse(sessionStorage.getItem(ROLES_KEY) || "null");
      return Array.isArray(roles) ? roles.filter((r) => typeof r === "string") : null;
    } catch (_) {
      return null;
    }
  }

  function noteRoles(roles) {
    try {
      sessionStorage.setItem(ROLES_KEY, JSON.stringify(Array.isArray(roles) ? roles : []));
    } catch (_) {
      /* all tabs stay shown; the server refuses what the roles do not allow */
    }
  }

  /** Tabs this operator may use (all of them while the roles are unknown). */
  function allowedTabs() {
    const roles = storedRoles();
    return Object.keys(TAB_ROLES).filter((tab) => roles === null || roles.includes(TAB_ROLES[tab]));
  }

  function showWho() {
    const who = $("ops-who");
    if (!getToken()) {
      who.textContent = "Not signed in";
      return;
    }
    const name = storedOperatorName();
    const roles = storedRoles();
    const held = roles && roles.length ? ` (${roles.join(", ").replace(/_/g, " ")})` : "";
    who.textContent = name ? `Signed in as ${name}${held}` : "Signed in";
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, param) {
      super(message);
      this.status = status;
      this.code = code;
      this.param = param || null;
      this.handled = false;
    }
  }

  /** The session ended (401) or the operator routes do not exist here (404 not_found: no operator
   *  credentials are configured, so nobody can sign in). */
  function isAuthFailure(error) {
    return error.status === 401 || (error.status === 404 && (error.code === "not_found" || !error.code));
  }

  /** Calls /v1/admin/... with the operator's session (or, for the sign-in routes, `bearer`: the token).
   *  `body` is an object (sent as JSON) or an already-serialised JSON string (used for amounts that must
   *  stay exact beyond 2^53). */
  async function api(method, path, body, bearer) {
    const token = bearer || getToken();
    const headers = { Accept: "application/json", Authorization: `Bearer ${token}` };
    const init = { method, headers, credentials: "omit", cache: "no-store", referrerPolicy: "no-referrer" };
    if (method !== "GET") {
      headers["Content-Type"] = "application/json";
      init.body = typeof body === "string" ? body : JSON.stringify(body || {});
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, "network_error", "Could not reach the server. Check the connection and try again.");
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const detail = (data && typeof data === "object" && data.error) || {};
      const error = new ApiError(
        response.status,
        typeof detail.code === "string" ? detail.code : "",
        typeof detail.message === "string" && detail.message
          ? detail.message
          : `The request failed (HTTP ${response.status}).`,
        typeof detail.param === "string" ? detail.param : null,
      );
      if (isAuthFailure(error) && !bearer) {
        error.handled = true;
        signOut(
          error.status === 401
            ? "Your session has ended (401). Sign in again with your token and a new code."
            : "The operator routes answered 404: no operators are configured on this server.",
          "error",
        );
      }
      throw error;
    }
    return data;
  }

  const enc = encodeURIComponent;

  function report(error) {
    if (error && error.handled) return;
    flash(error && error.message ? error.message : "Something went wrong.", "error");
  }

  // ---------------------------------------------------------------- lists (paged with cursors)

  const lists = {
    kyc: {
      path: "/v1/admin/kyc/queue",
      table: "kyc-queue",
      more: "kyc-more",
      empty: "kyc-empty",
      key: (item) => item.user_id,
      row: (item) => kycRow(item),
    },
    refunds: {
      path: "/v1/admin/refund-requests",
      table: "refund-requests",
      more: "refunds-more",
      empty: "refunds-empty",
      key: (item) => item.user_id,
      row: (item) => refundRow(item),
    },
    reviews: {
      path: "/v1/admin/payment-reviews",
      table: "payment-reviews",
      more: "reviews-more",
      empty: "reviews-empty",
      key: (item) => item.id,
      row: (item) => reviewRow(item),
    },
    disputes: {
      path: "/v1/admin/disputes",
      table: "disputes",
      more: "disputes-more",
      empty: "disputes-empty",
      key: (item) => item.dispute_id,
      row: (item) => disputeRow(item),
    },
  };

  const state = {};
  /** Forgets every list. The state objects are kept (their generation moves on), so an answer still on its
   *  way for a previous session or page is recognised as stale and dropped. */
  function resetState() {
    for (const name of Object.keys(lists)) {
      const st = state[name] || (state[name] = { generation: 0, items: new Map() });
      st.generation += 1;
      st.cursor = null;
      st.hasMore = false;
      st.loaded = false;
      st.pending = null;
      st.items.clear();
      const tbody = tbodyOf(name);
      if (tbody) tbody.replaceChildren();
      setHidden($(lists[name].more), true);
      setHidden($(lists[name].empty), true);
    }
  }

  const tbodyOf = (name) => {
    const table = $(lists[name].table);
    return table ? table.tBodies[0] : null;
  };

  function updateListChrome(name) {
    const list = lists[name];
    const st = state[name];
    const tbody = tbodyOf(name);
    setHidden($(list.empty), !(st.loaded && tbody.rows.length === 0));
    const more = $(list.more);
    const hadFocus = document.activeElement === more;
    setHidden(more, !st.hasMore);
    if (hadFocus && !st.hasMore) {
      const rows = tbody.rows;
      const target = rows.length ? rows[rows.length - 1].querySelector("input, textarea, button") : null;
      (target || $(`panel-${name}`)).focus();
    }
  }

  /** Loads the first page (`reset`) or the next one. Concurrent calls share one request; a reset makes any
   *  answer still on its way stale. */
  function loadList(name, reset) {
    const st = state[name];
    if (st.pending && !reset) return st.pending;
    if (reset) st.generation += 1;
    const generation = st.generation;
    const list = lists[name];
    const table = $(list.table);
    const more = $(list.more);
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (!reset && st.cursor) params.set("cursor", st.cursor);
    table.setAttribute("aria-busy", "true");
    more.disabled = true;
    const run = (async () => {
      try {
        const page = await api("GET", `${list.path}?${params}`);
        if (generation !== st.generation) return;
        const tbody = tbodyOf(name);
        if (reset) {
          tbody.replaceChildren();
          st.items.clear();
        }
        const data = page && Array.isArray(page.data) ? page.data : [];
        for (const item of data) {
          if (!item || typeof item !== "object") continue;
          const key = String(list.key(item));
          if (st.items.has(key)) continue;
          st.items.set(key, item);
          tbody.append(list.row(item));
        }
        st.cursor = page && typeof page.next_cursor === "string" ? page.next_cursor : null;
        st.hasMore = Boolean(page && page.has_more && st.cursor);
        st.loaded = true;
        updateListChrome(name);
      } finally {
        if (generation === st.generation) {
          table.removeAttribute("aria-busy");
          more.disabled = false;
          st.pending = null;
        }
      }
    })();
    st.pending = run;
    return run;
  }

  /** Replaces one row in place (after an action answered with the item's new state). */
  function replaceRow(name, oldRow, item) {
    const key = String(lists[name].key(item));
    state[name].items.set(key, item);
    const row = lists[name].row(item);
    oldRow.replaceWith(row);
    return row;
  }

  function removeRow(name, row, key) {
    const next = row.nextElementSibling || row.previousElementSibling;
    const hadFocus = row.contains(document.activeElement);
    state[name].items.delete(String(key));
    row.remove();
    updateListChrome(name);
    if (hadFocus || document.activeElement === document.body) {
      const target = next ? next.querySelector("input, textarea, button") : null;
      (target || $(`panel-${name}`)).focus();
    }
  }

  function setRowBusy(row, busy) {
    row.setAttribute("aria-busy", busy ? "true" : "false");
    for (const control of row.querySelectorAll("button, input, textarea")) {
      if (busy) {
        control.dataset.wasDisabled = control.disabled ? "1" : "";
        control.disabled = true;
      } else {
        control.disabled = control.dataset.wasDisabled === "1";
        delete control.dataset.wasDisabled;
      }
    }
    if (!busy) row.removeAttribute("aria-busy");
  }

  // Small building blocks for cells.
  const code = (text) => el("code", { text: text === undefined || text === null || text === "" ? DASH : text });
  const line = (children, className) => el("div", { className: className || "cell-line" }, children);

  function labelled(labelText, control, hint) {
    const label = el("label", { for: control.id, text: labelText });
    const parts = [label, control];
    if (hint) {
      const hintId = `${control.id}-hint`;
      control.setAttribute("aria-describedby", hintId);
      parts.push(el("p", { id: hintId, className: "hint", text: hint }));
    }
    return el("div", { className: "field" }, parts);
  }

  /** Who handled an item, when, and the note (payment reviews and disputes). */
  function handledView(handled) {
    if (!handled || typeof handled !== "object") {
      return el("p", { className: "handled", text: handled ? "Handled" : DASH });
    }
    return el("div", { className: "handled" }, [
      line([el("strong", { text: "Handled" }), handled.by ? ` by ${handled.by}` : ""]),
      handled.at ? line([timeEl(handled.at)]) : null,
      handled.note ? el("p", { className: "handled-note", text: handled.note }) : null,
    ]);
  }

  /** The "mark handled" form with a note (payment reviews and disputes). */
  function handledForm(kind, id, describedBy) {
    const noteId = uid(`${kind}-note`);
    const note = el("textarea", {
      id: noteId,
      name: "note",
      rows: "2",
      maxlength: String(MAX_TEXT),
      required: true,
      autocomplete: "off",
    });
    const button = el("button", { type: "submit", text: "Mark handled", "aria-describedby": describedBy });
    return el("form", { className: "handled-form row-form", "data-kind": kind, "data-id": id, novalidate: true }, [
      labelled("Note: what was done (recorded with your name)", note),
      button,
    ]);
  }

  async function submitHandled(form, name, pathFor, successText) {
    const row = form.closest("tr");
    const id = form.dataset.id;
    const note = form.elements.namedItem("note");
    const text = note.value.trim();
    if (!text) {
      fieldError(note, "Write a note saying how this was handled.");
      return;
    }
    if (text.length > MAX_TEXT) {
      fieldError(note, `The note can be at most ${MAX_TEXT} characters.`);
      return;
    }
    setRowBusy(row, true);
    try {
      const view = await api("POST", pathFor(id), { note: text });
      setRowBusy(row, false);
      if (view && view.handled && typeof view.handled === "object") noteOperator(view.handled.by);
      const fresh = replaceRow(name, row, view);
      const focusTarget = fresh.querySelector(".handled") || fresh;
      focusTarget.setAttribute("tabindex", "-1");
      focusTarget.focus();
      flash(successText(view), "ok");
    } catch (error) {
      setRowBusy(row, false);
      if (error.handled) return;
      if (error.param === "note") fieldError(note, error.message);
      flash(error.message, "error");
      if (error.status === 409 || error.status === 404) {
        loadList(name, true).catch(report);
      }
    }
  }

  // ---------------------------------------------------------------- KYC queue

  function kycRow(item) {
    const accountId = uid("kyc-account");
    const revealReasonId = uid("kyc-reveal-reason");
    const reasonId = uid("kyc-reason");
    const resultsId = uid("kyc-revealed");

    const account = el("td", { id: accountId, className: "account" }, [
      line([el("strong", { text: item.full_name || DASH })]),
      line([el("span", { className: "email", text: item.email || DASH })]),
      line([`Born ${calendarDateText(item.date_of_birth)}`]),
      line(["Account since ", timeEl(item.account_created_at)], "cell-line muted"),
      line(["ID ", code(item.user_id)], "cell-line muted"),
    ]);

    const revealReason = el("input", {
      id: revealReasonId,
      name: "reveal_reason",
      type: "text",
      maxlength: String(MAX_TEXT),
      autocomplete: "off",
    });
    const revealCell = el("td", { className: "actions" }, [
      el("fieldset", { className: "row-form" }, [
        el("legend", { text: "Reveal the PAN" }),
        labelled("Reason (recorded before the number is shown)", revealReason),
        el("div", { className: "button-row" }, [
          el("button", { type: "button", className: "secondary", "data-reveal": "pan", "aria-describedby": accountId, text: "Reveal PAN" }),
        ]),
        el("div", { id: resultsId, className: "reveal-results", "aria-live": "polite" }),
      ]),
    ]);

    const reason = el("input", {
      id: reasonId,
      name: "reason",
      type: "text",
      maxlength: String(MAX_TEXT),
      autocomplete: "off",
    });
    const decideCell = el("td", { className: "actions" }, [
      el("fieldset", { className: "row-form" }, [
        el("legend", { text: "Decide" }),
        labelled("Reason (required to reject; the customer sees it)", reason),
        el("div", { className: "button-row" }, [
          el("button", { type: "button", className: "approve", "data-decide": "approve", "aria-describedby": accountId, text: "Approve" }),
          el("button", { type: "button", className: "danger reject", "data-decide": "reject", "aria-describedby": accountId, text: "Reject" }),
        ]),
      ]),
    ]);

    return el("tr", { "data-user": item.user_id }, [
      el("td", {}, [timeEl(item.submitted_at)]),
      account,
      el("td", { className: "review-reason", text: REVIEW_REASON[item.review_reason] || item.review_reason || DASH }),
      el("td", { text: item.name_on_pan || DASH }),
      el("td", { className: "evidence" }, evidenceLines(item)),
      el("td", { className: "masked" }, [code(item.pan_masked)]),
      el("td", { className: "masked" }, [code(item.aadhaar_masked || DASH)]),
      revealCell,
      decideCell,
    ]);
  }

  const REVIEW_REASON = {
    partial_name_match: "The name matches the PAN's record only in part",
    aadhaar_details_differ: "DigiLocker's name differs from the PAN's",
    manual_mode: "Manual mode: every submission is approved by a person",
    legacy: "Submitted before the provider checks",
  };

  /** The KYC provider's answers, as the operator weighs them: never a full number. */
  function evidenceLines(item) {
    const lines = [];
    const pan = item.pan_check;
    if (pan) {
      lines.push(line([`Income Tax record: ${pan.record}`]));
      lines.push(line([`Registered name: ${pan.registered_name || DASH}`]));
      const score = pan.name_match_score === null || pan.name_match_score === undefined ? "" : ` (score ${pan.name_match_score})`;
      lines.push(line([`Name match: ${pan.name_match}${score}`]));
      const dob = pan.date_of_birth_match === null || pan.date_of_birth_match === undefined ? "not checked" : (pan.date_of_birth_match ? "matches" : "differs");
      lines.push(line([`Date of birth: ${dob}`]));
    }
    if (item.aadhaar_name) lines.push(line([`DigiLocker's name: ${item.aadhaar_name}`]));
    if (item.gstin) {
      const gst = item.gstin_check || {};
      lines.push(line([`GSTIN ${item.gstin}: ${gst.status || DASH}, ${gst.legal_name || DASH}`]));
    }
    return lines.length ? lines : [DASH];
  }

  const DOCUMENT_LABEL = { pan: "PAN" };

  function showRevealed(row, kind, number, revealedTo) {
    const documentKind = "pan";
    const results = row.querySelector(".reveal-results");
    const existing = results.querySelector(`.reveal-result[data-document="${documentKind}"]`);
    const label = DOCUMENT_LABEL[documentKind] || String(documentKind);
    const recorded = `Reveal recorded${revealedTo ? ` under ${revealedTo}` : ""} at ${istText(new Date().toISOString())}.`;
    const block = el("div", { className: "reveal-result", "data-document": documentKind }, [
      el("span", { className: "reveal-label", text: `Full ${label}: ` }),
      el("code", { className: "revealed", text: number }),
      el("p", { className: "hint reveal-note", text: recorded }),
    ]);
    if (existing) existing.replaceWith(block);
    else results.append(block);
  }

  async function revealNumber(row, documentKind) {
    const userId = row.dataset.user;
    const input = row.querySelector('input[name="reveal_reason"]');
    const reason = input.value.trim();
    const label = DOCUMENT_LABEL[documentKind] || documentKind;
    if (!reason) {
      fieldError(input, `Give a reason before revealing the full ${label}; it is recorded.`);
      flash(`A reason is required to reveal the full ${label}.`, "error");
      return;
    }
    clearFieldError(input);
    setRowBusy(row, true);
    try {
      const answer = await api("POST", `/v1/admin/kyc/${enc(userId)}/reveal`, { document: documentKind, reason });
      noteOperator(answer.revealed_to);
      showRevealed(row, answer.document || documentKind, answer.number, answer.revealed_to);
      flash(
        `Full ${label} shown for ${row.querySelector(".email")?.textContent || userId}. ` +
          `The reveal was recorded${answer.revealed_to ? ` under ${answer.revealed_to}` : ""} with your reason.`,
        "ok",
      );
    } catch (error) {
      if (error.handled) return;
      if (error.param === "reason") fieldError(input, error.message);
      flash(error.message, "error");
    } finally {
      if (row.isConnected) setRowBusy(row, false);
    }
  }

  const STALE_KYC_CODES = new Set(["kyc_not_pending", "kyc_already_verified", "kyc_not_found", "account_closed"]);

  async function decideKyc(row, decision) {
    const userId = row.dataset.user;
    const item = state.kyc.items.get(userId) || {};
    const who = item.full_name && item.email ? `${item.full_name} (${item.email})` : item.email || userId;
    const input = row.querySelector('input[name="reason"]');
    const reason = input.value.trim();
    if (decision === "reject" && !reason) {
      fieldError(input, "A rejection needs a reason; the customer sees it.");
      flash("Write the reason for the rejection first; the customer sees it.", "error");
      return;
    }
    if (reason.length > MAX_TEXT) {
      fieldError(input, `The reason can be at most ${MAX_TEXT} characters.`);
      return;
    }
    clearFieldError(input);
    const body = { decision };
    if (reason) body.reason = reason;
    setRowBusy(row, true);
    try {
      const answer = await api("POST", `/v1/admin/kyc/${enc(userId)}/decision`, body);
      noteOperator(answer.decided_by);
      const by = answer.decided_by ? ` Recorded under ${answer.decided_by}.` : "";
      const status = answer.status ? ` Status: ${answer.status}.` : "";
      removeRow("kyc", row, userId);
      if (decision === "approve") {
        flash(`Approved the KYC of ${who}.${status}${by}`, "ok");
      } else {
        const shown = answer.rejection_reason || reason;
        flash(`Rejected the KYC of ${who}.${status} Reason shown to the customer: “${shown}”.${by}`, "ok");
      }
    } catch (error) {
      if (error.handled) return;
      if (row.isConnected) setRowBusy(row, false);
      if (STALE_KYC_CODES.has(error.code)) {
        removeRow("kyc", row, userId);
        flash(`${error.message} (${who} was removed from the queue.)`, "error");
        return;
      }
      if (error.param === "reason") fieldError(input, error.message);
      flash(error.message, "error");
      return;
    }
  }

  // ---------------------------------------------------------------- refund requests

  function owedUnits(item) {
    return unitsOf(item.amount, item.amount_inr);
  }

  /** An API amount in whole paise as rupees; null when it is not a whole number of paise. */
  function formatPaise(paise) {
    return Number.isSafeInteger(paise) ? formatUnits(BigInt(paise) * UNITS_PER_PAISA) : null;
  }

  /** A line stating paise as rupees, or nothing when the value is not a whole number of paise. */
  function paiseLine(label, paise) {
    const rupees = formatPaise(paise);
    return rupees === null ? null : line([label, el("strong", { text: rupees })]);
  }

  /** What the bank transfer sends: the credit owed with the GST charged on it (refund vouchers reverse it). */
  function transferNote(item) {
    const transfer = formatPaise(item.transfer_paise);
    if (transfer === null) return null;
    const gst = formatPaise(item.gst_paise) ?? DASH;
    return el("p", { className: "cell-line" }, [
      "Transfer ",
      el("strong", { text: transfer }),
      ` (the credit owed and ${gst} GST, reversed by refund vouchers)`,
    ]);
  }

  function refundRow(item) {
    const accountId = uid("refund-account");
    const owed = owedUnits(item);
    const payout = item.last_payout && typeof item.last_payout === "object" ? item.last_payout : null;
    const open = item.status === "open" || (owed !== null && owed > 0n);

    let lastPayout = document.createTextNode(DASH);
    if (payout) {
      lastPayout = el("div", { className: "payout" }, [
        line([el("strong", { text: formatUnits(unitsOf(payout.amount, payout.amount_inr)) }), " credit"]),
        paiseLine("Transferred ", payout.transfer_paise),
        line(["Reference ", code(payout.reference)]),
        payout.paid_by ? line([`By ${payout.paid_by}`]) : null,
        payout.paid_at ? line([timeEl(payout.paid_at)], "cell-line muted") : null,
      ]);
    }

    let action = el("span", { className: "muted", text: "Nothing owed" });
    if (open) {
      const amountId = uid("payout-amount");
      const referenceId = uid("payout-reference");
      const amount = el("input", {
        id: amountId,
        name: "amount",
        type: "text",
        inputmode: "decimal",
        autocomplete: "off",
        required: true,
        placeholder: owed !== null ? formatUnits(owed).replace(/[₹,]/g, "") : "",
      });
      const reference = el("input", {
        id: referenceId,
        name: "reference",
        type: "text",
        maxlength: "100",
        autocomplete: "off",
        autocapitalize: "characters",
        spellcheck: "false",
        required: true,
      });
      action = el("form", { className: "payout-form row-form", "data-user": item.user_id, novalidate: true }, [
        transferNote(item),
        labelled("Credit paid out (₹)", amount, owed !== null ? `Exactly the credit owed: ${formatUnits(owed)}` : null),
        labelled("Bank reference (UTR)", reference),
        el("button", { type: "submit", "aria-describedby": accountId, text: "Record payout" }),
      ]);
    }

    return el("tr", { "data-user": item.user_id }, [
      el("td", { id: accountId }, [code(item.user_id)]),
      el("td", { className: "money" }, [el("strong", { text: owed !== null ? formatUnits(owed) : DASH })]),
      el("td", {}, [el("span", { className: `status status-${item.status === "paid" ? "paid" : "open"}`, text: item.status || DASH })]),
      el("td", {}, [timeEl(item.requested_at)]),
      el("td", {}, [lastPayout]),
      el("td", { className: "actions" }, [action]),
    ]);
  }

  async function submitPayout(form) {
    const row = form.closest("tr");
    const userId = form.dataset.user;
    const item = state.refunds.items.get(userId) || {};
    const owed = owedUnits(item);
    const amountInput = form.elements.namedItem("amount");
    const referenceInput = form.elements.namedItem("reference");
    const units = parseDecimalRupees(amountInput.value, false);
    if (units === null || units <= 0n || units > I64_MAX) {
      fieldError(amountInput, "Enter the amount paid in rupees, for example 1234.50.");
      return;
    }
    if (owed !== null && units !== owed) {
      fieldError(amountInput, `The payout must be exactly the amount owed, ${formatUnits(owed)}.`);
      return;
    }
    const reference = referenceInput.value.trim();
    if (!reference || reference.length > 100) {
      fieldError(referenceInput, "Enter the bank transfer's reference (UTR), 1 to 100 characters.");
      return;
    }
    // Built by hand so the BigInt amount stays exact (JSON.stringify cannot write a BigInt).
    const body = `{"amount":${units.toString()},"reference":${JSON.stringify(reference)}}`;
    setRowBusy(row, true);
    try {
      const view = await api("POST", `/v1/admin/refund-requests/${enc(userId)}/payout`, body);
      setRowBusy(row, false);
      const paid = view && view.last_payout && typeof view.last_payout === "object" ? view.last_payout : null;
      if (paid) noteOperator(paid.paid_by);
      const fresh = replaceRow("refunds", row, view);
      fresh.querySelector("td").setAttribute("tabindex", "-1");
      fresh.querySelector("td").focus();
      flash(`Payout of ${formatUnits(units)} to account ${userId} recorded (reference ${reference}).`, "ok");
    } catch (error) {
      setRowBusy(row, false);
      if (error.handled) return;
      if (error.param === "reference") fieldError(referenceInput, error.message);
      else if (error.param === "amount" && error.status === 400) fieldError(amountInput, error.message);
      flash(error.message, "error");
      if (error.status === 409 || error.status === 404) {
        // The amount owed changed (or the request is gone): show the current state.
        loadList("refunds", true).catch(report);
      }
    }
  }

  // ---------------------------------------------------------------- payment reviews

  function detailValue(key, value) {
    if (value === null || value === undefined) return DASH;
    if (/_paise$/.test(key) && Number.isSafeInteger(value)) {
      return el("span", { className: "money", text: formatPaise(value) });
    }
    if (/(^id$|_id$)/.test(key) && typeof value === "string") return code(value);
    if (/_at$/.test(key) && typeof value === "string") return timeEl(value);
    if (typeof value === "object") return code(JSON.stringify(value));
    return String(value);
  }

  function detailsView(details) {
    if (!details || typeof details !== "object" || Array.isArray(details)) {
      return code(details === undefined ? "" : JSON.stringify(details));
    }
    const list = el("dl", { className: "details" });
    for (const [key, value] of Object.entries(details)) {
      if (key === "reason") continue;
      list.append(el("dt", { text: humanKey(key) }), el("dd", {}, [detailValue(key, value)]));
    }
    return el("div", {}, [
      typeof details.reason === "string" ? el("p", { className: "detail-reason", text: details.reason }) : null,
      list,
    ]);
  }

  function reviewRow(item) {
    const recordedId = uid("review-recorded");
    return el("tr", { "data-review": item.id }, [
      el("td", { id: recordedId }, [timeEl(item.recorded_at)]),
      el("td", {}, [detailsView(item.details)]),
      el("td", { className: "actions" }, [
        item.handled ? handledView(item.handled) : handledForm("review", item.id, recordedId),
      ]),
    ]);
  }

  // ---------------------------------------------------------------- disputes

  const STATE_TEXT = { held: "held", released: "released", debited: "debited" };

  function disputeRow(item) {
    const disputeCellId = uid("dispute-id");
    const held = typeof item.held === "number" && Number.isSafeInteger(item.held) ? BigInt(item.held) : null;
    const stateWord = STATE_TEXT[item.state] || (item.state ? String(item.state) : "unknown");
    return el("tr", { "data-dispute": item.dispute_id }, [
      el("td", {}, [timeEl(item.opened_at)]),
      el("td", { id: disputeCellId }, [code(item.dispute_id)]),
      el("td", {}, [code(item.payment_id)]),
      el("td", {}, [code(item.user_id)]),
      el("td", {}, [el("span", { className: `status state-${stateWord.replace(/[^a-z]/g, "")}`, text: stateWord })]),
      el("td", { className: "money" }, [held !== null ? formatUnits(held) : DASH]),
      el("td", { className: "actions" }, [
        item.handled ? handledView(item.handled) : handledForm("dispute", item.dispute_id, disputeCellId),
      ]),
    ]);
  }

  // ---------------------------------------------------------------- tabs

  const tabs = Array.from(document.querySelectorAll('[role="tab"][data-tab]'));
  let currentTab = "kyc";

  function selectTab(name, moveFocus, load = true) {
    if (!lists[name]) return;
    currentTab = name;
    for (const tab of tabs) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", selected ? "true" : "false");
      tab.tabIndex = selected ? 0 : -1;
      tab.classList.toggle("active", selected);
      setHidden($(tab.getAttribute("aria-controls")), !selected);
      if (selected && moveFocus) tab.focus();
    }
    if (load && getToken() && !state[name].loaded) loadList(name, true).catch(report);
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => selectTab(tab.dataset.tab, false));
    tab.addEventListener("keydown", (event) => {
      const index = tabs.indexOf(tab);
      let next = null;
      if (event.key === "ArrowRight" || event.key === "ArrowDown") next = tabs[(index + 1) % tabs.length];
      else if (event.key === "ArrowLeft" || event.key === "ArrowUp") next = tabs[(index - 1 + tabs.length) % tabs.length];
      else if (event.key === "Home") next = tabs[0];
      else if (event.key === "End") next = tabs[tabs.length - 1];
      if (next) {
        event.preventDefault();
        selectTab(next.dataset.tab, true);
      }
    });
  }

  // ---------------------------------------------------------------- sign in / out

  function showConsole(signedIn) {
    setHidden($("ops-login-view"), signedIn);
    setHidden($("ops-console"), !signedIn);
    setHidden($("ops-signout"), !signedIn);
    showWho();
  }

  function signOut(message, kind) {
    forgetSession();
    resetState();
    showConsole(false);
    if (message) flash(message, kind || "ok");
    const input = $("ops-token");
    if (input) input.focus();
  }

  async function enterConsole(fromLogin) {
    resetState();
    const allowed = allowedTabs();
    for (const tab of tabs) {
      const shown = allowed.includes(tab.dataset.tab);
      setHidden(tab, !shown);
    }
    const first = allowed[0];
    const roles = storedRoles();
    const admin = roles === null || roles.includes("admin");
    setHidden($("incidents"), !admin);
    setHidden($("ceiling"), !(roles === null || roles.includes("support")));
    setHidden($("gstr1"), !(roles === null || roles.includes("payments")));
    const privacy = admin || roles.includes("support");
    setHidden($("privacy-requests"), !privacy);
    setHidden($("correction"), !(roles === null || roles.includes("kyc_reviewer")));
    if (admin) loadIncidents().catch(report);
    if (privacy) loadPrivacyRequests().catch(report);
    let loaded = false;
    try {
      if (first) await loadList(first, true);
      loaded = true;
    } catch (error) {
      if (error.handled) return false; // the session ended: signOut already said so
      if (fromLogin) {
        forgetSession();
        flash(`Could not open the console: ${error.message}`, "error");
        return false;
      }
      report(error); // a stored session and a passing failure: stay signed in, let them retry
    }
    showConsole(true);
    if (first) selectTab(first, false, false);
    if (fromLogin && loaded && first === "kyc") {
      const waiting = tbodyOf("kyc").rows.length;
      const more = state.kyc.hasMore ? " or more" : "";
      flash(`Signed in. ${waiting}${more} KYC submission${waiting === 1 && !more ? "" : "s"} waiting.`, "ok");
    } else if (fromLogin) {
      flash("Signed in.", "ok");
    }
    const current = tabs.find((tab) => tab.dataset.tab === first);
    if (fromLogin && current) current.focus();
    return true;
  }

  // ---------------------------------------------------------------- an account's rate-limit ceiling

  /** "" -> null; a whole number -> the number; anything else -> undefined (refused). */
  function wholeOrNull(text) {
    const trimmed = String(text).trim();
    if (trimmed === "") return null;
    return /^\d{1,10}$/.test(trimmed) ? Number(trimmed) : undefined;
  }

  $("ceiling-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const user = form.elements.user_id.value.trim();
    const rpm = wholeOrNull(form.elements.requests_per_minute.value);
    const tpm = wholeOrNull(form.elements.tokens_per_minute.value);
    const calls = wholeOrNull(form.elements.calls_in_flight.value);
    if (!user || rpm === undefined || tpm === undefined || calls === undefined) {
      flash("Enter the account's user id and whole numbers (or nothing) for the ceiling.", "error");
      return;
    }
    const ceiling = rpm === null && tpm === null ? null : { requests_per_minute: rpm, tokens_per_minute: tpm };
    try {
      const body = { rate_limit_ceiling: ceiling, calls_in_flight: calls };
      const limits = await api("PUT", `/v1/admin/accounts/${encodeURIComponent(user)}/limits`, body);
      const set = limits.rate_limit_ceiling || {};
      const text = (n) => (n === null || n === undefined ? "no ceiling" : n.toLocaleString("en-IN"));
      $("ceiling-result").textContent =
        `${user}: requests a minute ${text(set.requests_per_minute)}; tokens a minute ${text(set.tokens_per_minute)}; ` +
        `calls at once ${limits.calls_in_flight === null ? "the platform's default" : text(limits.calls_in_flight)}.`;
      flash("Ceiling saved.", "ok");
    } catch (error) {
      report(error);
    }
  });

  // ---------------------------------------------------------------- data-rights requests (support, admin)

  function privacyRow(item) {
    const due = item.due === "overdue" ? "overdue: " : item.due === "soon" ? "due soon: " : "";
    return el("tr", null, [
      el("td", null, [el("code", { text: String(item.id || "") })]),
      el("td", { text: String(item.kind || "").replace(/_/g, " ") }),
      el("td", null, [el("code", { text: String(item.user_id || "") })]),
      el("td", null, [timeEl(item.received_at), el("br"), document.createTextNode(String(item.received_via || "").replace(/_/g, " "))]),
      el("td", null, [document.createTextNode(due), timeEl(item.due_at)]),
      el("td", { text: String(item.message || (item.timeline && item.timeline[0] && item.timeline[0].note) || "") }),
    ]);
  }

  async function loadPrivacyRequests() {
    const due = $("privacy-due").value;
    const listed = await api("GET", `/v1/admin/privacy-requests${due ? `?due=${enc(due)}` : ""}`);
    const rows = Array.isArray(listed.data) ? listed.data.map(privacyRow) : [];
    $("privacy-table").tBodies[0].replaceChildren(...rows);
    setHidden($("privacy-empty"), rows.length > 0);
  }

  $("privacy-refresh").addEventListener("click", () => loadPrivacyRequests().catch(report));
  $("privacy-due").addEventListener("change", () => loadPrivacyRequests().catch(report));

  $("privacy-record").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const body = {
      email: form.elements.email.value,
      kind: form.elements.kind.value,
      received_via: form.elements.received_via.value,
      identity_check: form.elements.identity_check.value,
    };
    if (form.elements.message.value.trim()) body.message = form.elements.message.value;
    if (form.elements.requester_email.value.trim()) body.requester_email = form.elements.requester_email.value;
    try {
      const recorded = await api("POST", "/v1/admin/privacy-requests", body);
      $("privacy-result").textContent = `Recorded as ${recorded.id}, due ${new Date(recorded.due_at).toLocaleDateString("en-IN", { timeZone: "Asia/Kolkata" })}; the sender is told by e-mail.`;
      form.reset();
      await loadPrivacyRequests();
    } catch (error) {
      report(error);
    }
  });

  $("privacy-step").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const id = form.elements.request_id.value.trim();
    const action = event.submitter ? event.submitter.value : "note";
    const text = form.elements.text.value;
    try {
      if (action === "note") {
        await api("POST", `/v1/admin/privacy-requests/${enc(id)}/events`, { note: text });
        $("privacy-result").textContent = `Step recorded on ${id}.`;
      } else {
        await api("POST", `/v1/admin/privacy-requests/${enc(id)}/answer`, { status: action, outcome: text });
        $("privacy-result").textContent = `${id} answered; the customer is told by e-mail.`;
      }
      form.elements.text.value = "";
      await loadPrivacyRequests();
    } catch (error) {
      report(error);
    }
  });

  $("correction-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const user = form.elements.user_id.value.trim();
    const body = { request_id: form.elements.request_id.value.trim(), evidence: form.elements.evidence.value };
    if (form.elements.date_of_birth.value) body.date_of_birth = form.elements.date_of_birth.value;
    if (form.elements.name_on_pan.value.trim()) body.name_on_pan = form.elements.name_on_pan.value;
    try {
      const corrected = await api("POST", `/v1/admin/accounts/${enc(user)}/corrections`, body);
      $("correction-result").textContent = corrected.kyc_recheck
        ? `Corrected; ${body.request_id} answered. The PAN is being checked again (KYC ${corrected.kyc_status}).`
        : `Corrected; ${body.request_id} answered.`;
      form.reset();
    } catch (error) {
      report(error);
    }
  });

  // ---------------------------------------------------------------- security incidents (admin)

  /** A datetime-local value (the operator's local time) as RFC 3339, or null when empty. */
  function instantOf(value) {
    if (!value) return null;
    const at = new Date(value);
    return Number.isNaN(at.getTime()) ? undefined : at.toISOString();
  }

  function incidentRow(item) {
    const stands = [
      item.closed ? "closed" : "open",
      item.cert_in_reported ? "CERT-In reported" : "CERT-In not reported",
      item.board_informed ? "Board informed" : "Board not informed",
      item.board_report_sent ? "Board report sent" : "Board report not sent",
    ].join("; ");
    return el("tr", null, [
      el("td", null, [el("strong", { text: String(item.title || "") }), el("br"), el("code", { text: String(item.id || "") })]),
      el("td", null, [timeEl(item.detected_at)]),
      el("td", null, [timeEl(item.cert_in_due_at)]),
      el("td", null, [timeEl(item.board_report_due_at)]),
      el("td", { text: stands }),
    ]);
  }

  async function loadIncidents() {
    const listed = await api("GET", "/v1/admin/incidents");
    const body = $("incidents-table").tBodies[0];
    body.replaceChildren(...(Array.isArray(listed.data) ? listed.data.map(incidentRow) : []));
  }

  $("incidents-refresh").addEventListener("click", () => loadIncidents().catch(report));

  $("incident-open").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const detected = instantOf(form.elements.detected_at.value);
    if (detected === undefined) {
      fieldError(form.elements.detected_at, "Enter a date and time, or leave it empty for now.");
      return;
    }
    const body = { title: form.elements.title.value, summary: form.elements.summary.value };
    if (detected) body.detected_at = detected;
    try {
      const opened = await api("POST", "/v1/admin/incidents", body);
      $("incident-result").textContent = `Incident ${opened.id} opened: CERT-In's report is due by ${new Date(opened.cert_in_due_at).toLocaleString("en-IN", { timeZone: "Asia/Kolkata" })} IST.`;
      form.reset();
      await loadIncidents();
    } catch (error) {
      report(error);
    }
  });

  $("incident-event").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const id = form.elements.incident_id.value.trim();
    try {
      const body = { kind: form.elements.kind.value, note: form.elements.note.value };
      await api("POST", `/v1/admin/incidents/${enc(id)}/events`, body);
      $("incident-result").textContent = `Recorded on ${id}.`;
      form.elements.note.value = "";
      await loadIncidents();
    } catch (error) {
      report(error);
    }
  });

  /** The notice form as the API takes it, or null (with the reason flashed). */
  function noticeOf(form, dryRun) {
    const ids = form.elements.user_ids.value.split(/\s+/).filter(Boolean);
    const what = Array.from(form.querySelectorAll('input[name="touch"]:checked')).map((box) => box.value);
    const from = instantOf(form.elements.from.value);
    const to = instantOf(form.elements.to.value);
    let recipients;
    if (ids.length) recipients = { user_ids: ids };
    else if (what.length && from && to) recipients = { touched: { what, from, to } };
    else {
      flash("Name the accounts by id, or choose what was touched and the window's start and end.", "error");
      return null;
    }
    const message = {};
    for (const field of ["what_happened", "when", "data", "consequences", "measures", "safety", "contact"]) {
      message[field] = form.elements[field].value;
    }
    return { notice_id: form.elements.notice_id.value.trim(), dry_run: dryRun, recipients, message };
  }

  $("incident-notice").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const preview = !event.submitter || event.submitter.value !== "send";
    const notice = noticeOf(form, preview);
    if (!notice) return;
    const id = form.elements.incident_id.value.trim();
    try {
      const outcome = await api("POST", `/v1/admin/incidents/${enc(id)}/notices`, notice);
      const sample = Array.isArray(outcome.sample_user_ids) ? outcome.sample_user_ids.join(", ") : "";
      const partial = outcome.complete ? "" : " at least (the preview stopped at its time limit before every account)";
      const more = outcome.complete ? " Every account has it; recorded on the incident." : " so far: press Send again to carry on.";
      $("incident-result").textContent = preview
        ? `Preview: "${outcome.subject}" would go to ${outcome.recipients} account(s)${partial}. ${sample}`
        : `Sent to ${outcome.recipients} account(s) this time.${more}`;
      if (!preview) await loadIncidents();
    } catch (error) {
      report(error);
    }
  });

  // ---------------------------------------------------------------- the accountant's GSTR-1 files

  $("gstr1-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const period = form.elements.period.value.trim();
    const format = form.elements.format.value;
    if (!/^\d{4}-\d{2}$/.test(period)) {
      flash("Choose a month.", "error");
      return;
    }
    const path = format === "json"
      ? `/v1/admin/gstr1/${period}`
      : `/v1/admin/gstr1/${period}/csv/${encodeURIComponent(format)}`;
    try {
      const response = await fetch(path, {
        headers: { Authorization: `Bearer ${getToken()}` },
        credentials: "omit",
        cache: "no-store",
        referrerPolicy: "no-referrer",
      });
      if (!response.ok) throw new ApiError(response.status, "", `The file could not be made (HTTP ${response.status}).`);
      const type = format === "json" ? "application/json" : "text/csv";
      const blob = new Blob([await response.arrayBuffer()], { type });
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `gstr1-${period}-${format}.${format === "json" ? "json" : "csv"}`;
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      $("gstr1-result").textContent = `${link.download} downloaded.`;
    } catch (error) {
      report(error);
    }
  });

  /** The token typed in the form, checked; null (with the field's error shown) when unusable. */
  function typedToken(form) {
    const input = form.elements.namedItem("token");
    const token = input.value.trim();
    if (!token) {
      fieldError(input, "Paste your operator token.");
      return null;
    }
    if (!/^[\x21-\x7e]+$/.test(token)) {
      fieldError(input, "That is not a token: it has spaces or characters a token cannot have.");
      return null;
    }
    clearFieldError(input);
    return token;
  }

  $("ops-login").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const codeInput = form.elements.namedItem("code");
    const button = form.querySelector('button[type="submit"]');
    const token = typedToken(form);
    if (!token) return;
    const code = codeInput.value.trim();
    if (!/^[0-9]{6}$/.test(code)) {
      fieldError(codeInput, "Enter the 6 digits your authenticator shows.");
      return;
    }
    clearFieldError(codeInput);
    clearFlash();
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const opened = await api("POST", "/v1/admin/sessions", { code }, token);
      setToken(opened.session);
      noteRoles(opened.roles);
      noteOperator(opened.operator);
      form.elements.namedItem("token").value = "";
      codeInput.value = "";
      setHidden($("ops-enrolled"), true);
      await enterConsole(true);
    } catch (error) {
      if (error.code === "invalid_totp_code") fieldError(codeInput, error.message);
      else if (error.code === "invalid_admin_token") fieldError(form.elements.namedItem("token"), error.message);
      else report(error);
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });

  $("ops-enrol").addEventListener("click", async () => {
    const form = $("ops-login");
    const token = typedToken(form);
    if (!token) return;
    clearFlash();
    try {
      const enrolled = await api("POST", "/v1/admin/totp/enrol", {}, token);
      $("ops-otpauth").textContent = String(enrolled.otpauth_uri || "");
      setHidden($("ops-enrolled"), false);
      form.elements.namedItem("code").focus();
    } catch (error) {
      report(error);
    }
  });

  $("ops-signout").addEventListener("click", async () => {
    try {
      await api("DELETE", "/v1/admin/sessions");
    } catch (_) {
      /* the session is forgotten here either way */
    }
    signOut("Signed out. The session was ended and removed from this tab.", "ok");
  });

  // ---------------------------------------------------------------- list actions (delegated)

  for (const name of Object.keys(lists)) {
    $(lists[name].more).addEventListener("click", () => loadList(name, false).catch(report));
    const refresh = $(`${name}-refresh`);
    if (refresh) {
      refresh.addEventListener("click", () => {
        clearFlash();
        loadList(name, true).catch(report);
      });
    }
  }

  $("kyc-queue").addEventListener("click", (event) => {
    const button = event.target instanceof Element ? event.target.closest("button[data-reveal], button[data-decide]") : null;
    if (!button || button.disabled) return;
    const row = button.closest("tr[data-user]");
    if (!row) return;
    if (button.dataset.reveal) revealNumber(row, "pan");
    else decideKyc(row, button.dataset.decide === "reject" ? "reject" : "approve");
  });

  $("refund-requests").addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("payout-form")) return;
    event.preventDefault();
    submitPayout(form);
  });

  $("payment-reviews").addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("handled-form")) return;
    event.preventDefault();
    submitHandled(
      form,
      "reviews",
      (id) => `/v1/admin/payment-reviews/${enc(id)}/handled`,
      (view) => `Payment review marked handled${view && view.handled && view.handled.by ? ` by ${view.handled.by}` : ""}.`,
    );
  });

  $("disputes").addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.classList.contains("handled-form")) return;
    event.preventDefault();
    submitHandled(
      form,
      "disputes",
      (id) => `/v1/admin/disputes/${enc(id)}/handled`,
      (view) =>
        `Dispute ${view && view.dispute_id ? view.dispute_id : form.dataset.id} marked handled` +
        `${view && view.handled && view.handled.by ? ` by ${view.handled.by}` : ""}.`,
    );
  });

  // ---------------------------------------------------------------- start

  resetState();
  if (getToken()) {
    showConsole(true);
    enterConsole(false);
  } else {
    showConsole(false);
  }
})();
