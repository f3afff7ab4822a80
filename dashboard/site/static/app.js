// InferexAI customer dashboard: one static page, hash routing, no framework.
//
// Security rules this file keeps (the page is served with a strict CSP, see dashboard/content-security-policy.txt):
// - no inline script or style, no eval: every colour and size is a CSS class, SVG gets plain attributes only;
// - no innerHTML: API data (key names, full names, user agents...) is attacker-controlled, so every node is
//   built with createElement/textContent;
// - the session lives in the HttpOnly cookie `inferex_session`; this script never sees or stores it. Every
//   state-changing call carries `X-CSRF-Token` read from the `inferex_csrf` cookie at the time of the call.
// - money is integers: paise (top-ups, thresholds) and nano-rupees (wallet, ledger, usage: 1 rupee = 10^9).
//   They are converted with BigInt and shown from strings, never through floating point.
"use strict";

const IST = "Asia/Kolkata";
const CSRF_COOKIE = "inferex_csrf";
const UNITS_PER_RUPEE = 1000000000n;
const LEDGER_PAGE = 20;
const USAGE_PAGE = 50;
const CSV_PAGE = 100;
const CSV_MAX_ROWS = 10000;
const EXPORT_STORAGE_KEY = "inferex_export_id"; // an export id, not a secret: lets a reload resume polling
const PUBLIC_VIEWS = new Set(["login", "signup", "forgot"]);
/** Views anyone may open, signed in or not. */
const OPEN_VIEWS = new Set(["models"]);

const state = {
  account: null, // GET /v1/account while signed in
  closure: null, // the DELETE /v1/account answer, shown once
  afterLogin: null, // the hash a signed-out visitor asked for
  keys: [], // for key names in the usage view
  ledgerCursor: null,
  taxDocumentsCursor: null,
  usageQuery: null, // the filter the usage table shows
  usageCursor: null,
  exportTimer: null,
  csvUrl: null,
  charts: null, // the last usage data drawn, for redrawing at a new width
  configPromise: null,
  privacyPromise: null,
  razorpayPromise: null,
  keepFlash: false, // set by navigate(): the next hashchange keeps the flash message that explains it
};

// ---------------------------------------------------------------------------------------------------------
// DOM helpers

const $ = (selector, root = document) => root.querySelector(selector);
const SVG_NS = "http://www.w3.org/2000/svg";

/** el("td", {class: "num"}, "text", node): attributes via setAttribute, children as text nodes or nodes. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  setAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttrs(node, attrs);
  appendChildren(node, children);
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : String(value));
  }
}

function appendChildren(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Own keys only: a route or field named "toString" must not reach Object.prototype. */
function has(object, key) {
  return Object.prototype.hasOwnProperty.call(object, key);
}

function show(node, visible) {
  node.classList.toggle("hidden", !visible);
}

function setText(selector, text) {
  $(selector).textContent = text;
}

// ---------------------------------------------------------------------------------------------------------
// Formatting: money, numbers, dates (all times shown in IST)

const groupIn = new Intl.NumberFormat("en-IN");
const dateTimeIst = new Intl.DateTimeFormat("en-IN", {
  timeZone: IST, day: "2-digit", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
});
const dateIst = new Intl.DateTimeFormat("en-IN", { timeZone: IST, day: "2-digit", month: "short", year: "numeric" });
const dayPartsIst = new Intl.DateTimeFormat("en-GB", { timeZone: IST, year: "numeric", month: "2-digit", day: "2-digit" });
const shortDayUtc = new Intl.DateTimeFormat("en-IN", { timeZone: "UTC", day: "numeric", month: "short" });
const plainDateUtc = new Intl.DateTimeFormat("en-IN", { timeZone: "UTC", day: "2-digit", month: "short", year: "numeric" });

/** "-1234567.5" -> "-₹12,34,567.50": Indian grouping of the integer part, the decimals as given (at least 2). */
function rupees(decimal) {
  const match = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(decimal).trim());
  if (!match) return "₹" + decimal;
  return match[1] + "₹" + groupIn.format(BigInt(match[2])) + "." + (match[3] || "").padEnd(2, "0");
}

/** Wallet units (nano-rupees) to a decimal rupee string, exactly as shared::money::format_inr does. */
function unitsToDecimal(units) {
  let n;
  try {
    n = BigInt(units);
  } catch {
    return String(units);
  }
  const negative = n < 0n;
  if (negative) n = -n;
  const fraction = (n % UNITS_PER_RUPEE).toString().padStart(9, "0");
  const trimmed = fraction.replace(/0+$/, "");
  return (negative ? "-" : "") + (n / UNITS_PER_RUPEE).toString() + "." + (trimmed.length < 2 ? fraction.slice(0, 2) : trimmed);
}

function paiseToDecimal(paise) {
  let n = BigInt(paise);
  const negative = n < 0n;
  if (negative) n = -n;
  return (negative ? "-" : "") + (n / 100n).toString() + "." + (n % 100n).toString().padStart(2, "0");
}

/** "1,500.5" or "1500.50" typed by a person -> 150050 paise; null when it is not an amount. No floats. */
function rupeesToPaise(text) {
  const match = /^(\d{1,12})(?:\.(\d{0,2}))?$/.exec(String(text).trim().replace(/,/g, ""));
  if (!match) return null;
  return Number(BigInt(match[1]) * 100n + BigInt((match[2] || "").padEnd(2, "0")));
}

/** Signed amounts in the ledger: "+₹500.00" / "-₹0.0012". */
function signedRupees(decimal) {
  const text = rupees(decimal);
  return text.startsWith("-") ? text : "+" + text;
}

/** A chart label: two decimals, or two significant digits below one rupee (truncated: labels only). */
function shortRupees(decimal) {
  const match = /^(-?\d+)\.(\d+)$/.exec(String(decimal));
  if (!match) return rupees(decimal);
  const firstDigit = match[2].search(/[1-9]/);
  const keep = /^-?0$/.test(match[1]) && firstDigit >= 2 ? firstDigit + 2 : 2;
  return rupees(`${match[1]}.${match[2].slice(0, keep)}`);
}

function sumUnits(values) {
  return values.reduce((total, value) => total + BigInt(value || 0), 0n);
}

function formatNumber(n) {
  return n === null || n === undefined ? "–" : groupIn.format(n);
}

function formatDateTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateTimeIst.format(date);
}

function formatDate(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateIst.format(date);
}

/** A calendar date ("1994-08-15") shown as is: no time zone may move it. */
function formatPlainDate(day) {
  const date = dayToUtcDate(day);
  return date ? plainDateUtc.format(date) : String(day || "–");
}

/** Today's date in India, "YYYY-MM-DD". */
function todayIst() {
  const parts = Object.fromEntries(dayPartsIst.formatToParts(new Date()).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}`;
}

function dayToUtcDate(day) {
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(day));
  return match ? new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3]))) : null;
}

function addDays(day, count) {
  const date = dayToUtcDate(day);
  date.setUTCDate(date.getUTCDate() + count);
  return date.toISOString().slice(0, 10);
}

function humanBytes(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${Math.ceil(bytes / 1024)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

// ---------------------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(message, status, code, param) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "";
    this.param = param || null;
  }
}

function readCookie(name) {
  for (const part of document.cookie.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return "";
}

/**
 * fetch() on the same origin with the session cookie. Non-GET calls carry the CSRF header and (POST, PATCH,
 * PUT, or a DELETE with a body) a JSON body. An error answer becomes a thrown ApiError with the server's
 * message; a 401 also ends the signed-in state (unless `auth: false`, for the calls made while signed out).
 */
async function api(path, options = {}) {
  const method = options.method || "GET";
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") {
    const csrf = readCookie(CSRF_COOKIE);
    if (csrf) headers["X-CSRF-Token"] = csrf;
    if (method !== "DELETE" || options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body === undefined ? {} : options.body);
    }
  }
  let url = path;
  if (options.query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(options.query)) {
      if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
    }
    const query = params.toString();
    if (query) url += "?" + query;
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError("Could not reach InferexAI. Check your connection and try again.", 0, "network_error");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    const message = typeof error.message === "string" && error.message
      ? error.message
      : `The request failed (HTTP ${response.status}).`;
    const failure = new ApiError(message, response.status, error.code, error.param);
    if (response.status === 401 && options.auth !== false) {
      failure.handled = true;
      sessionEnded();
    }
    throw failure;
  }
  return data;
}

function getConfig() {
  if (!state.configPromise) {
    // Production ships {"checkout": "razorpay"}; `make run` answers {"checkout": "standin", ...} itself.
    state.configPromise = fetch("/config.json", { credentials: "same-origin", cache: "no-store" })
      .then((r) => (r.ok ? r.json() : {}))
      .catch(() => ({}))
      .then((config) => ({ checkout: "razorpay", ...config }));
  }
  return state.configPromise;
}

function getPrivacy(fresh = false) {
  if (!state.privacyPromise || fresh) {
    state.privacyPromise = api("/v1/privacy", { auth: false }).catch((error) => {
      state.privacyPromise = null; // ask again next time
      throw error;
    });
  }
  return state.privacyPromise;
}

// ---------------------------------------------------------------------------------------------------------
// Feedback: the #flash live region, inline field errors, busy forms

function flash(message, kind = "ok") {
  const box = $("#flash");
  box.className = "flash " + kind;
  box.replaceChildren(el("p", { class: kind }, message));
}

function clearFlash() {
  const box = $("#flash");
  box.className = "flash";
  box.replaceChildren();
}

/** Shows an error in #flash (a 401 already sent the visitor to the login view with its own message). */
function report(error) {
  if (error && error.handled) return;
  flash(error && error.message ? error.message : "Something went wrong. Please try again.", "error");
}

/** The .field-error paragraph an input names in aria-describedby, if any. */
function errorNodeFor(input) {
  const ids = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
  return ids.map((id) => document.getElementById(id)).find((node) => node && node.classList.contains("field-error"));
}

function setFieldError(input, message) {
  const node = errorNodeFor(input);
  if (node) node.textContent = message;
  input.setAttribute("aria-invalid", message ? "true" : "false");
  input.classList.toggle("invalid", Boolean(message));
}

/** Puts a 400's message next to the field its `param` names, when the form has a place for it. */
function showServerFieldError(form, error) {
  if (!(error instanceof ApiError) || !error.param) return;
  // A field named differently from the API's (amount_rupees for amount_paise) says so in data-param.
  const input = form.elements[error.param] || form.querySelector(`[data-param="${CSS.escape(error.param)}"]`);
  if (input instanceof HTMLElement && errorNodeFor(input)) {
    setFieldError(input, error.message);
    input.focus();
  }
}

/** Runs `task` with the form's (or button's) buttons disabled; errors go to #flash. */
async function busy(control, task) {
  const buttons = control.tagName === "FORM" ? [...control.querySelectorAll("button")] : [control];
  buttons.forEach((b) => { b.disabled = true; });
  control.setAttribute("aria-busy", "true");
  try {
    return await task();
  } catch (error) {
    if (control.tagName === "FORM") showServerFieldError(control, error);
    report(error);
    return undefined;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    control.removeAttribute("aria-busy");
  }
}

function emptyTable(selector) {
  $(selector + " tbody").replaceChildren();
}

// ---------------------------------------------------------------------------------------------------------
// Routing and the signed-in chrome

const LOADERS = {
  login: async () => {},
  signup: loadSignup,
  forgot: async () => {},
  overview: loadOverview,
  kyc: loadKyc,
  wallet: loadWallet,
  keys: loadKeys,
  usage: loadUsage,
  account: loadAccount,
  models: loadModels,
};

const TITLES = {
  login: "Sign in", signup: "Create your account", forgot: "Reset your password", overview: "Overview", kyc: "KYC",
  wallet: "Wallet", keys: "API keys", usage: "Usage", account: "Account & privacy", closed: "Account closed",
  models: "Models and where they run",
};

/** "#/wallet/return?topup=x" -> {path: "wallet/return", params}; null for other hashes (like the skip link's). */
function currentRoute() {
  const hash = window.location.hash;
  if (!hash.startsWith("#/")) return null;
  const rest = hash.slice(2);
  const at = rest.indexOf("?");
  return {
    path: at === -1 ? rest : rest.slice(0, at),
    params: new URLSearchParams(at === -1 ? "" : rest.slice(at + 1)),
  };
}

/** Goes to a view. Programmatic moves keep the flash message that explains them. */
function navigate(name) {
  const target = "#/" + name;
  if (window.location.hash === target) {
    render({ focus: true });
  } else {
    state.keepFlash = true;
    window.location.hash = target;
  }
}

function showView(name) {
  for (const view of document.querySelectorAll(".view")) show(view, false);
  const view = name === "closed" ? $("#closed-summary") : $("#view-" + name);
  show(view, true);
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = (TITLES[name] || "Dashboard") + " · InferexAI";
  return view;
}

async function render(options = {}) {
  stopExportPolling();
  const route = currentRoute();
  let name = route ? route.path : "";
  if (name === "wallet/return") {
    if (!state.account) {
      state.afterLogin = window.location.hash; // keep the payment's answer for after the login
      name = "login";
      window.history.replaceState(null, "", "#/login");
    } else {
      await handleTopupReturn(route.params);
      return;
    }
  } else if (name === "closed" && state.closure) {
    focusView(showView("closed"), options);
    return;
  } else if (!has(LOADERS, name)) {
    name = state.account ? "overview" : "login";
    window.history.replaceState(null, "", "#/" + name);
  } else if (OPEN_VIEWS.has(name)) {
    // Anyone may read it.
  } else if (!state.account && !PUBLIC_VIEWS.has(name)) {
    state.afterLogin = "#/" + name;
    name = "login";
    window.history.replaceState(null, "", "#/login");
  } else if (state.account && PUBLIC_VIEWS.has(name)) {
    name = "overview";
    window.history.replaceState(null, "", "#/overview");
  }
  focusView(showView(name), options);
  try {
    await LOADERS[name]();
  } catch (error) {
    report(error);
  }
}

/** After a route change, move focus to the view's heading so keyboard and screen-reader users follow. */
function focusView(view, options) {
  if (!options.focus) return;
  const heading = view.querySelector("h2");
  if (heading) heading.focus();
}

function updateChrome() {
  const account = state.account;
  show($("#site-nav"), Boolean(account));
  show($("#user-box"), Boolean(account));
  setText("#user-email", account ? account.email : "");
  show($("#verify-banner"), Boolean(account && !account.email_verified));
  setText("#verify-banner-email", account ? account.pending_email || account.email : "");
  const policyPending = Boolean(account && account.policy_update_pending);
  show($("#policy-banner"), policyPending);
  if (policyPending) {
    // Fresh: a policy can come into force while this tab is open, and the banner must name the new one.
    getPrivacy(true).then((notice) => setText("#policy-banner-version", notice.policy_version)).catch(() => {});
  }
}

/** A call answered 401: the session is gone (expired, revoked elsewhere, account closed). */
function sessionEnded() {
  const wasSignedIn = Boolean(state.account);
  resetUserState();
  updateChrome();
  const route = currentRoute();
  if (route && !PUBLIC_VIEWS.has(route.path)) state.afterLogin = window.location.hash;
  if (wasSignedIn) flash("Your session has ended. Please sign in again.", "error");
  navigate("login");
}

/** Forgets everything about the previous user, including anything sensitive still on screen. */
function resetUserState() {
  stopExportPolling();
  state.account = null;
  state.keys = [];
  state.ledgerCursor = null;
  state.usageQuery = null;
  state.usageCursor = null;
  state.charts = null;
  hideNewKey();
  if (state.csvUrl) URL.revokeObjectURL(state.csvUrl);
  state.csvUrl = null;
  show($("#usage-csv-link"), false);
  for (const selector of ["#ledger", "#keys-table", "#usage-table", "#usage-days", "#usage-models-table",
    "#sessions-table", "#logins-table", "#privacy-requests"]) emptyTable(selector);
  $("#usage-chart").replaceChildren();
  $("#usage-models").replaceChildren();
  $("#export-status").replaceChildren();
  for (const form of document.querySelectorAll("form")) form.reset();
}

function signedOut(message) {
  resetUserState();
  updateChrome();
  flash(message);
  navigate("login");
}

// ---------------------------------------------------------------------------------------------------------
// Signed out: login, signup, forgotten password

async function signIn(email, password) {
  // The answer also carries the token; it is not kept anywhere: the HttpOnly cookie is the session.
  await api("/v1/auth/login", { method: "POST", body: { email, password }, auth: false });
  state.account = await api("/v1/account", { auth: false });
  updateChrome();
}

async function onLogin(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  await busy(form, async () => {
    await signIn(form.elements.email.value.trim(), form.elements.password.value);
    form.reset();
    const target = state.afterLogin || "#/overview";
    state.afterLogin = null;
    if (window.location.hash === target) await render({ focus: true });
    else window.location.hash = target;
  });
}

async function loadSignup() {
  // No min/max/minlength on the form: the server's rules (18+ in IST, password length) answer with messages.
  const notice = await getPrivacy();
  setText("#signup-policy-version", notice.policy_version);
  renderNotice($("#signup-notice"), notice);
}

async function onSignup(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  const f = form.elements;
  await busy(form, async () => {
    // The terms version must be the policy in force, as GET /v1/privacy publishes it.
    const notice = await getPrivacy();
    const body = {
      email: f.email.value.trim(),
      password: f.password.value,
      full_name: f.full_name.value.trim(),
      date_of_birth: f.date_of_birth.value,
      accepted_terms_version: notice.policy_version,
      marketing_consent: f.marketing_consent.checked,
    };
    // Signup answers the same whether or not the address already has an account (its owner is told by
    // e-mail), so a sign-in that fails here means the address was taken.
    await api("/v1/auth/signup", { method: "POST", body, auth: false });
    try {
      await signIn(body.email, body.password);
    } catch (error) {
      if (error.status !== 401) throw error;
      form.reset();
      flash("We sent a message to that address. If it already has an account, sign in with its password, or reset it.");
      navigate("login");
      return;
    }
    form.reset();
    flash("Welcome to InferexAI! We sent you a link to confirm your e-mail address.");
    navigate("overview");
  });
}

async function onForgot(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  await busy(form, async () => {
    const answer = await api("/v1/auth/password-reset", {
      method: "POST", body: { email: form.elements.email.value.trim() }, auth: false,
    });
    form.reset();
    flash(answer && answer.message ? capitalise(answer.message) + "." : "If an account has this address, a link is on its way.");
  });
}

function capitalise(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

async function onLogout(event) {
  await busy(event.currentTarget, async () => {
    try {
      await api("/v1/auth/logout", { method: "POST", auth: false });
    } catch (error) {
      if (error.status !== 401) throw error; // already signed out: fine
    }
    signedOut("You are signed out.");
  });
}

// ---------------------------------------------------------------------------------------------------------
// Banners: e-mail verification and policy updates

async function onResendVerification(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    try {
      const answer = await api("/v1/auth/verify-email/resend", { method: "POST" });
      flash(`A new link is on its way to ${answer.email}.`);
    } catch (error) {
      if (error.code !== "email_already_verified") throw error;
      state.account = await api("/v1/account");
      updateChrome();
      flash("Your e-mail address is already confirmed.");
    }
  });
}

async function onAcceptPolicy(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    const notice = await getPrivacy();
    state.account = await api("/v1/account/accept-policy", { method: "POST", body: { version: notice.policy_version } });
    updateChrome();
    flash(`Thank you: you accepted the policy of ${notice.policy_version}.`);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Overview

async function loadOverview() {
  const [account, wallet, keys, spend] = await Promise.allSettled([
    api("/v1/account"),
    api("/v1/wallet"),
    api("/v1/keys"),
    api("/v1/usage/summary", { query: { group_by: "day" } }), // the server's default window: 30 days
  ]);
  if (account.status === "fulfilled") {
    state.account = account.value;
    updateChrome();
  }
  const a = state.account;
  if (!a) return;
  renderKycBadge($("#overview-kyc"), a.kyc_status);
  if (wallet.status === "fulfilled") setText("#overview-balance", rupees(wallet.value.balance_inr));
  if (keys.status === "fulfilled") {
    state.keys = keys.value.data || [];
    setText("#overview-keys", formatNumber(state.keys.length));
  }
  if (spend.status === "fulfilled") {
    setText("#overview-spend", rupees(unitsToDecimal(sumUnits((spend.value.data || []).map((d) => d.cost)))));
  }
  markStep("#step-email", a.email_verified);
  markStep("#step-kyc", a.kyc_status === "verified");
  markStep("#step-topup", wallet.status === "fulfilled" && BigInt(wallet.value.balance) > 0n);
  markStep("#step-key", state.keys.length > 0);
  const failed = [account, wallet, keys, spend].find((r) => r.status === "rejected");
  if (failed) report(failed.reason);
}

function markStep(selector, done) {
  const step = $(selector);
  step.classList.toggle("done", done);
  const marker = step.querySelector(".visually-hidden");
  if (done && !marker) step.append(el("span", { class: "visually-hidden" }, " (done)"));
  if (!done && marker) marker.remove();
}

function renderKycBadge(node, status) {
  node.textContent = status; // the raw status word: not_submitted | pending | in_review | verified | rejected (or a step's)
  node.className = "badge badge-" + status;
}

// ---------------------------------------------------------------------------------------------------------
// KYC: the server's rules (shared/src/kyc/documents.rs), mirrored so mistakes show before submitting;
// then DigiLocker, where the customer shares their Aadhaar (we never see the number).

const HOLDER_TYPES = "PCFHTABGLJ";
const GSTIN_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

function normalisePan(raw) {
  return raw.trim().toUpperCase();
}

function kycHolder(form) {
  return form.elements.holder.value === "business" ? "business" : "person";
}

/** "" when the PAN passes the server's rules, else what is wrong. */
function panProblem(raw, business) {
  const pan = normalisePan(raw);
  if (!pan) return "Enter the PAN.";
  if (!/^[A-Z]{5}[0-9]{4}[A-Z]$/.test(pan)) return "A PAN is 10 characters: 5 letters, 4 digits, 1 letter (like ABCPE1234F).";
  if (pan.slice(5, 9) === "0000") return "This PAN has an invalid serial number (0000).";
  if (!business && pan[3] !== "P") return "A person verifies with an individual's PAN (its 4th letter is P); a business with its GSTIN.";
  if (!HOLDER_TYPES.includes(pan[3])) return "The PAN's 4th letter is not a holder type.";
  return "";
}

/** The GSTIN's check character (GSTN's base-36 scheme), as the server computes it. */
function gstinCheckChar(first14) {
  let sum = 0;
  for (let i = 0; i < 14; i++) {
    const product = GSTIN_CHARS.indexOf(first14[i]) * (i % 2 === 0 ? 1 : 2);
    sum += Math.floor(product / 36) + (product % 36);
  }
  return GSTIN_CHARS[(36 - (sum % 36)) % 36];
}

function gstinProblem(raw, business, form) {
  if (!business) return "";
  const gstin = normalisePan(raw);
  if (!gstin) return "Enter the business's GSTIN.";
  if (!/^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$/.test(gstin)) return "A GSTIN is 15 characters: state code, PAN, entity number, Z, check character.";
  if (gstinCheckChar(gstin) !== gstin[14]) return "This GSTIN's check character does not match: please check it.";
  const pan = normalisePan(form.elements.pan.value);
  if (pan && pan[3] !== "P" && gstin.slice(2, 12) !== pan) {
    return "A business's own PAN must be the one inside the GSTIN (characters 3 to 12); if you act for it, give your own PAN.";
  }
  return "";
}

function nameOnPanProblem(raw) {
  const name = raw.trim();
  if (!name) return "Enter the name printed on the PAN card.";
  if ([...name].length > 100) return "At most 100 characters.";
  if (/\p{Cc}/u.test(name)) return "The name contains characters that cannot be printed.";
  return "";
}

const KYC_CHECKS = {
  pan: (input, business) => panProblem(input.value, business),
  gstin: (input, business, form) => gstinProblem(input.value, business, form),
  name_on_pan: (input) => nameOnPanProblem(input.value),
  consent: (input) => (input.checked ? "" : "Consent to the check to submit."),
};

function validateKycField(input) {
  const form = input.form;
  const problem = KYC_CHECKS[input.name](input, kycHolder(form) === "business", form);
  setFieldError(input, problem);
  return problem === "";
}

/** While typing: check once the value is complete (or to clear an error being fixed), not at every key. */
function onKycInput(event) {
  const input = event.target;
  if (input.name === "holder") {
    onHolderChange(input.form);
    return;
  }
  if (!has(KYC_CHECKS, input.name)) return;
  const complete = (input.name === "pan" && normalisePan(input.value).length >= 10)
    || (input.name === "gstin" && normalisePan(input.value).length >= 15) || input.name === "consent";
  if (complete || input.getAttribute("aria-invalid") === "true") validateKycField(input);
}

function onKycBlur(event) {
  const input = event.target;
  if (has(KYC_CHECKS, input.name) && input.type !== "checkbox" && input.value !== "") validateKycField(input);
}

const CONSENT_PURPOSE = {
  person: "To verify your identity, InferexAI sends your PAN, the name on it and your date of birth to its KYC provider, which checks them against the Income Tax Department's records; the answer (valid or not, whether the name and date of birth match) is kept with your KYC record.",
  business: "To verify your business, InferexAI sends its GSTIN to its KYC provider, which checks it against GSTN's records, and the PAN and the name on it, checked against the Income Tax Department's records; the answers, the legal name and the registration's status are kept with your KYC record and printed on your tax invoices.",
};

function onHolderChange(form) {
  const business = kycHolder(form) === "business";
  show($("#kyc-gstin-field"), business);
  setText("#kyc-consent-purpose", CONSENT_PURPOSE[business ? "business" : "person"]);
  setFieldError(form.elements.gstin, "");
}

async function loadKyc() {
  renderKyc(await api("/v1/kyc"));
}

const KYC_TEXT = {
  not_submitted: "Submit your PAN (or your business's GSTIN) to top up and create API keys.",
  pending: "Waiting for the next step below.",
  in_review: "A person is checking your details against the records; this usually takes less than a working day.",
  verified: "Your identity is verified.",
  rejected: "Your details could not be verified.",
};

/** What the customer waits for while KYC is pending: the provider, or their own DigiLocker step. */
function pendingText(kyc) {
  if (kyc.pan_status === "pending") return "We are checking your PAN with the Income Tax Department; this page updates when they answer.";
  if (kyc.holder === "person" && kyc.aadhaar_status === "pending") return "Waiting for DigiLocker: finish sharing there, or start again.";
  if (kyc.holder === "person") return "Your PAN is verified. Next: share your Aadhaar from DigiLocker.";
  return KYC_TEXT.pending;
}

function renderKycSteps(kyc) {
  const business = kyc.holder === "business";
  renderKycBadge($("#kyc-pan-status"), kyc.pan_status || "not_started");
  renderKycBadge($("#kyc-aadhaar-status"), kyc.aadhaar_status || "not_started");
  renderKycBadge($("#kyc-gstin-status"), kyc.gstin_status || "not_started");
  show($("#kyc-step-aadhaar"), !business);
  show($("#kyc-step-gstin"), business);
  markStep("#kyc-step-pan", kyc.pan_status === "passed");
  markStep("#kyc-step-aadhaar", kyc.aadhaar_status === "passed");
  markStep("#kyc-step-gstin", kyc.gstin_status === "passed");
  const canShare = !business && kyc.status === "pending" && kyc.pan_status !== "failed"
    && ["not_started", "pending", "failed"].includes(kyc.aadhaar_status);
  show($("#kyc-digilocker-box"), canShare);
  setText("#kyc-aadhaar-reason", kyc.aadhaar_reason || "");
  show($("#kyc-aadhaar-reason"), Boolean(kyc.aadhaar_reason));
}

function renderKyc(kyc) {
  renderKycBadge($("#kyc-status"), kyc.status);
  setText("#kyc-status-text", kyc.status === "pending" ? pendingText(kyc) : KYC_TEXT[kyc.status] || "");
  setText("#kyc-reason", kyc.rejection_reason || "");
  show($("#kyc-reason-box"), kyc.status === "rejected" && Boolean(kyc.rejection_reason));
  show($("#kyc-steps"), kyc.status !== "not_submitted");
  renderKycSteps(kyc);
  show($("#kyc-details"), kyc.status !== "not_submitted");
  setText("#kyc-name", kyc.name_on_pan || "–");
  setText("#kyc-pan", kyc.pan_masked || "–");
  setText("#kyc-aadhaar", kyc.aadhaar_masked || "–");
  setText("#kyc-gstin", kyc.gstin || "–");
  setText("#kyc-legal-name", kyc.legal_name || "–");
  setText("#kyc-submitted", formatDateTime(kyc.submitted_at));
  setText("#kyc-verified", formatDateTime(kyc.verified_at));
  // A new submission after a rejection; while pending or in review the steps above say what comes next.
  show($("#kyc-form-card"), kyc.status === "not_submitted" || kyc.status === "rejected");
  if (state.account) state.account.kyc_status = kyc.status;
}

async function onKycSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const business = kycHolder(form) === "business";
  const names = business ? ["gstin", "pan", "name_on_pan", "consent"] : ["pan", "name_on_pan", "consent"];
  const inputs = names.map((name) => form.elements[name]);
  const invalid = inputs.filter((input) => !validateKycField(input));
  if (invalid.length) {
    invalid[0].focus();
    return;
  }
  clearFlash();
  const body = { pan: normalisePan(form.elements.pan.value), name_on_pan: form.elements.name_on_pan.value.trim(), consent: true };
  if (business) body.gstin = normalisePan(form.elements.gstin.value);
  const done = await busy(form, async () => {
    const kyc = await api("/v1/kyc", { method: "POST", body });
    form.reset(); // the full numbers should not stay on screen
    onHolderChange(form);
    inputs.forEach((input) => setFieldError(input, ""));
    renderKyc(kyc);
    flash(kyc.status === "verified" ? "Your KYC is verified." : pendingText(kyc));
    return true;
  });
  // A verification that failed is kept with its reason: show it.
  if (!done) await loadKyc().catch(() => undefined);
}

/** Opens a DigiLocker session and goes to its consent page; DigiLocker sends the browser back here. */
async function onDigilocker(event) {
  const button = event.currentTarget;
  await busy(button, async () => {
    const session = await api("/v1/kyc/digilocker", { method: "POST" });
    window.location.assign(session.url);
  });
}

// ---------------------------------------------------------------------------------------------------------
// Wallet: balance, ledger, top-ups, low-balance alert

async function loadWallet() {
  renderGate($("#wallet-gate"), "top up");
  const [wallet] = await Promise.all([
    refreshWallet(), loadLedger(true), loadSpendAlerts(), loadBillingProfile(), loadTaxDocuments(true),
  ]);
  const threshold = $("#threshold-form").elements.threshold_rupees;
  if (wallet && document.activeElement !== threshold) threshold.value = paiseToDecimal(wallet.low_balance_threshold_paise);
  const limit = $("#spend-limit-form").elements.monthly_limit_rupees;
  if (wallet && document.activeElement !== limit) {
    limit.value = wallet.monthly_spend_limit_paise === null ? "" : paiseToDecimal(wallet.monthly_spend_limit_paise);
  }
  if (wallet) renderMonthlySpend(wallet);
}

function renderMonthlySpend(wallet) {
  setText("#monthly-spend", wallet.monthly_spend_limit_paise === null
    ? "No monthly limit."
    : `Spent this month: ${paiseText(wallet.monthly_spend_paise)} of ${paiseText(wallet.monthly_spend_limit_paise)}.`);
}

/** 1050 -> "₹10.50". */
function paiseText(paise) {
  return rupees(paiseToDecimal(paise));
}

const SPEND_CAPS = { total: "Key, in total", daily: "Key, per day", monthly: "Key, per month", account_monthly: "Account, per month" };

async function loadSpendAlerts() {
  const list = await api("/v1/wallet/spend-alerts");
  const alerts = list.data || [];
  $("#spend-alerts tbody").replaceChildren(...alerts.map((alert) => el("tr", null,
    el("td", null, formatDateTime(alert.created_at)),
    el("td", null, (SPEND_CAPS[alert.cap] || alert.cap) + (alert.key_id ? ` (${alert.key_id})` : "") + `, ${alert.window}`),
    el("td", { class: "num" }, `${alert.percent}%`),
    el("td", { class: "num" }, `${paiseText(alert.spent_paise)} of ${paiseText(alert.limit_paise)}`))));
  show($("#spend-alerts-empty"), alerts.length === 0);
}

async function onSpendLimit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const input = form.elements.monthly_limit_rupees;
  const text = input.value.trim();
  const paise = text === "" ? null : rupeesToPaise(text);
  if (text !== "" && paise === null) {
    setFieldError(input, "Enter an amount in rupees, or leave it empty for no limit.");
    input.focus();
    return;
  }
  setFieldError(input, "");
  clearFlash();
  await busy(form, async () => {
    const wallet = await api("/v1/wallet", { method: "PATCH", body: { monthly_spend_limit_paise: paise } });
    renderMonthlySpend(wallet);
    flash(paise === null ? "The monthly spend limit is off." : `Calls that would take this month past ${paiseText(paise)} are refused.`);
  });
}

async function refreshWallet() {
  const wallet = await api("/v1/wallet");
  setText("#wallet-balance", rupees(wallet.balance_inr));
  setText("#wallet-held", rupees(wallet.held_inr));
  setText("#wallet-available", rupees(wallet.available_inr));
  return wallet;
}

/** Explains what still stands between the customer and a top-up or a key. */
function renderGate(node, action) {
  const account = state.account;
  node.replaceChildren();
  if (!account) return show(node, false);
  if (!account.email_verified) {
    node.append(`Confirm your e-mail address before you ${action}: use the link we sent you.`);
  } else if (account.kyc_status !== "verified") {
    node.append(`You can ${action} once your KYC is verified. `, el("a", { href: "#/kyc" }, "Go to KYC"));
  }
  show(node, node.childNodes.length > 0);
}

const LEDGER_KINDS = {
  topup: "Top-up", usage: "API usage", refund: "Refund", closure_refund: "Closure refund", dispute: "Dispute",
};

async function loadLedger(reset) {
  if (reset) {
    state.ledgerCursor = null;
    emptyTable("#ledger");
  }
  const page = await api("/v1/wallet/transactions", { query: { limit: LEDGER_PAGE, cursor: state.ledgerCursor } });
  const body = $("#ledger tbody");
  for (const entry of page.data || []) {
    const negative = String(entry.amount_inr).startsWith("-");
    body.append(el("tr", null,
      el("td", null, formatDateTime(entry.created_at)),
      el("td", null, LEDGER_KINDS[entry.kind] || entry.kind),
      el("td", { class: "num " + (negative ? "neg" : "pos") }, signedRupees(entry.amount_inr)),
      el("td", { class: "num" }, rupees(unitsToDecimal(entry.balance_after))),
      el("td", { class: "mono wrap" }, entry.reference || "")));
  }
  state.ledgerCursor = page.has_more ? page.next_cursor : null;
  show($("#ledger-more"), Boolean(page.has_more));
  show($("#ledger-empty"), body.childElementCount === 0);
}

async function onLedgerMore(event) {
  await busy(event.currentTarget, () => loadLedger(false));
}

async function onTopup(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const input = form.elements.amount_rupees;
  const paise = rupeesToPaise(input.value);
  if (paise === null || paise <= 0) {
    setFieldError(input, "Enter an amount in rupees, like 500 or 1500.50.");
    input.focus();
    return;
  }
  setFieldError(input, "");
  clearFlash();
  await busy(form, () => startTopup(paise));
}

/** Creates the order, then pays it in Razorpay Checkout (or the local stand-in page under `make run`). */
async function startTopup(paise) {
  const topup = await api("/v1/wallet/topups", { method: "POST", body: { amount_paise: paise } });
  const config = await getConfig();
  if (config.checkout === "standin") {
    const page = sameOriginUrl(config.standin_checkout_url);
    if (!page) throw new Error("The payment page is not configured.");
    // Only the top-up this tab started may come back: a crafted return link changes nothing here.
    window.sessionStorage.setItem(STANDIN_TOPUP_KEY, topup.id);
    window.location.assign(page + "?order_id=" + encodeURIComponent(topup.razorpay_order_id)
      + "&return=" + encodeURIComponent("/#/wallet/return?topup=" + topup.id));
    return;
  }
  const Razorpay = await loadRazorpay();
  const checkout = new Razorpay({
    key: topup.razorpay_key_id,
    order_id: topup.razorpay_order_id,
    amount: topup.tax ? topup.tax.total_paise : topup.amount_paise, // the credit and its GST
    currency: "INR",
    name: "InferexAI",
    description: "Wallet top-up",
    prefill: { email: state.account ? state.account.email : "" },
    handler: (response) => {
      verifyTopup(topup.id, response).catch(report);
    },
    modal: { ondismiss: () => flash("Payment cancelled: nothing was charged.", "error") },
  });
  checkout.on("payment.failed", (response) => {
    const reason = response && response.error && response.error.description;
    flash(reason ? `The payment failed: ${reason}` : "The payment failed.", "error");
  });
  checkout.open();
}

/** A root-relative path (or same-origin URL) only: the stand-in page must not send money anywhere else. */
function sameOriginUrl(value) {
  if (typeof value !== "string" || !value) return null;
  try {
    const url = new URL(value, window.location.origin);
    return url.origin === window.location.origin ? url.pathname + url.search : null;
  } catch {
    return null;
  }
}

/** Injects checkout.js once (CSP allows https://checkout.razorpay.com) and resolves to window.Razorpay. */
function loadRazorpay() {
  if (window.Razorpay) return Promise.resolve(window.Razorpay);
  if (!state.razorpayPromise) {
    state.razorpayPromise = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "https://checkout.razorpay.com/v1/checkout.js";
      script.async = true;
      script.addEventListener("load", () => {
        if (window.Razorpay) resolve(window.Razorpay);
        else reject(new Error("Razorpay Checkout did not start."));
      });
      script.addEventListener("error", () => {
        state.razorpayPromise = null;
        script.remove();
        reject(new Error("Could not load Razorpay Checkout. Check your connection and try again."));
      });
      document.head.append(script);
    });
  }
  return state.razorpayPromise;
}

async function verifyTopup(topupId, payment, refresh = true) {
  const topup = await api(`/v1/wallet/topups/${encodeURIComponent(topupId)}/verify`, {
    method: "POST",
    body: { razorpay_payment_id: payment.razorpay_payment_id, razorpay_signature: payment.razorpay_signature },
  });
  if (topup.status === "paid") {
    flash(`${rupees(paiseToDecimal(topup.amount_paise))} credited to your wallet.`);
  } else {
    flash("Payment received: your balance updates as soon as Razorpay confirms it.");
  }
  $("#topup-form").reset();
  if (refresh) await Promise.all([refreshWallet(), loadLedger(true)]);
  return topup;
}

/** Where the tab remembers the top-up it sent to the stand-in's checkout page. */
const STANDIN_TOPUP_KEY = "inferex.standinTopup";

/**
 * The stand-in checkout sends the customer back to #/wallet/return?topup=..&razorpay_...=.. or &error=..
 * Honoured only under the stand-in (Razorpay's own Checkout answers in the page) and only for the top-up
 * this tab started, once.
 */
async function handleTopupReturn(params) {
  showView("wallet");
  const topupId = params.get("topup");
  const error = params.get("error");
  const expected = window.sessionStorage.getItem(STANDIN_TOPUP_KEY);
  const config = await getConfig().catch(() => ({}));
  try {
    if (config.checkout !== "standin" || !topupId || topupId !== expected) {
      // Not a payment this tab sent away: nothing to verify or report.
    } else if (error) {
      window.sessionStorage.removeItem(STANDIN_TOPUP_KEY);
      const what = error === "cancelled" ? "Payment cancelled" : "The payment failed";
      flash(`${what}: nothing was charged.`, "error");
    } else if (params.get("razorpay_payment_id") && params.get("razorpay_signature")) {
      window.sessionStorage.removeItem(STANDIN_TOPUP_KEY);
      await verifyTopup(topupId, {
        razorpay_payment_id: params.get("razorpay_payment_id"),
        razorpay_signature: params.get("razorpay_signature"),
      }, false); // loadWallet() below refreshes

    } else {
      flash("The payment page came back without a result. If you paid, your balance updates shortly.", "error");
    }
  } catch (failure) {
    report(failure);
  } finally {
    // The payment's ids stay out of the address bar and the history (no hashchange: replaceState).
    window.history.replaceState(null, "", "#/wallet");
  }
  if (state.account) {
    try {
      await loadWallet();
    } catch (failure) {
      report(failure);
    }
  }
}

// GST state and union-territory codes (the place of supply), as GSTN numbers them.
const GST_STATES = [
  ["35", "Andaman and Nicobar Islands"], ["37", "Andhra Pradesh"], ["12", "Arunachal Pradesh"], ["18", "Assam"],
  ["10", "Bihar"], ["04", "Chandigarh"], ["22", "Chhattisgarh"], ["26", "Dadra and Nagar Haveli and Daman and Diu"],
  ["07", "Delhi"], ["30", "Goa"], ["24", "Gujarat"], ["06", "Haryana"], ["02", "Himachal Pradesh"],
  ["01", "Jammu and Kashmir"], ["20", "Jharkhand"], ["29", "Karnataka"], ["32", "Kerala"], ["38", "Ladakh"],
  ["31", "Lakshadweep"], ["23", "Madhya Pradesh"], ["27", "Maharashtra"], ["14", "Manipur"], ["17", "Meghalaya"],
  ["15", "Mizoram"], ["13", "Nagaland"], ["21", "Odisha"], ["97", "Other Territory"], ["34", "Puducherry"],
  ["03", "Punjab"], ["08", "Rajasthan"], ["11", "Sikkim"], ["33", "Tamil Nadu"], ["36", "Telangana"],
  ["16", "Tripura"], ["09", "Uttar Pradesh"], ["05", "Uttarakhand"], ["19", "West Bengal"],
];

/** Fills the billing form from the profile (an empty form until one is set). */
async function loadBillingProfile() {
  const form = $("#billing-form");
  const select = form.elements.state_code;
  if (select.options.length === 0) {
    select.append(el("option", { value: "" }, "Choose…"),
      ...GST_STATES.map(([code, name]) => el("option", { value: code }, `${name} (${code})`)));
  }
  let profile = null;
  try {
    profile = await api("/v1/account/billing-profile");
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 404) throw error;
  }
  if (form.contains(document.activeElement)) return;
  form.elements.billing_name.value = profile ? profile.billing_name : "";
  form.elements.address.value = profile ? profile.address : "";
  select.value = profile ? profile.state_code : "";
  form.elements.pin.value = profile ? profile.pin : "";
  setText("#billing-gstin", profile && profile.gstin
    ? `GSTIN on your invoices: ${profile.gstin} (${profile.legal_name || ""}), from your KYC.`
    : "");
}

async function onBillingProfile(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const body = {
    billing_name: form.elements.billing_name.value.trim(),
    address: form.elements.address.value.trim(),
    state_code: form.elements.state_code.value,
    pin: form.elements.pin.value.trim(),
  };
  for (const input of form.querySelectorAll("input, select")) setFieldError(input, "");
  clearFlash();
  await busy(form, async () => {
    const profile = await api("/v1/account/billing-profile", { method: "PUT", body });
    flash(`Billing details saved: tax documents go to ${profile.billing_name}, ${profile.state}.`);
    await loadBillingProfile();
  });
}

const TAX_DOCUMENT_KINDS = { receipt_voucher: "Receipt voucher", tax_invoice: "Tax invoice", refund_voucher: "Refund voucher" };

async function loadTaxDocuments(reset) {
  if (reset) {
    state.taxDocumentsCursor = null;
    emptyTable("#tax-documents");
  }
  const page = await api("/v1/tax-documents", { query: { limit: LEDGER_PAGE, cursor: state.taxDocumentsCursor } });
  const body = $("#tax-documents tbody");
  for (const doc of page.data || []) {
    const pdf = el("button", { type: "button", class: "secondary small" }, "PDF");
    pdf.addEventListener("click", () => busy(pdf, () => downloadDocument(doc, "pdf")).catch(report));
    const json = el("button", { type: "button", class: "secondary small" }, "JSON");
    json.addEventListener("click", () => busy(json, () => downloadDocument(doc, "json")).catch(report));
    body.append(el("tr", null,
      el("td", null, formatDateTime(doc.issued_at)),
      el("td", null, TAX_DOCUMENT_KINDS[doc.kind] || doc.kind),
      el("td", { class: "mono" }, doc.number),
      el("td", { class: "num" }, paiseText(doc.total_paise)),
      el("td", null, pdf, " ", json)));
  }
  state.taxDocumentsCursor = page.has_more ? page.next_cursor : null;
  show($("#tax-documents-more"), Boolean(page.has_more));
  show($("#tax-documents-empty"), body.childElementCount === 0);
}

/** Fetches a document with the session cookie and saves it under its number. */
async function downloadDocument(doc, format) {
  const url = sameOriginUrl(format === "pdf" ? doc.pdf_url : doc.json_url);
  if (!url) throw new Error("The document's address is not on this site.");
  const accept = format === "pdf" ? "application/pdf" : "application/json";
  const response = await fetch(url, { headers: { Accept: accept }, credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`The document could not be downloaded (HTTP ${response.status}).`);
  const blob = new Blob([await response.arrayBuffer()], { type: accept });
  const link = el("a", { href: URL.createObjectURL(blob), download: `${doc.number.replaceAll("/", "-")}.${format}` });
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function onThreshold(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const input = form.elements.threshold_rupees;
  const paise = rupeesToPaise(input.value);
  if (paise === null) {
    setFieldError(input, "Enter an amount in rupees (0 turns the alert off).");
    input.focus();
    return;
  }
  setFieldError(input, "");
  clearFlash();
  await busy(form, async () => {
    const wallet = await api("/v1/wallet", { method: "PATCH", body: { low_balance_threshold_paise: paise } });
    input.value = paiseToDecimal(wallet.low_balance_threshold_paise);
    flash(wallet.low_balance_threshold_paise > 0
      ? `We will e-mail you when your balance drops below ${rupees(paiseToDecimal(wallet.low_balance_threshold_paise))}.`
      : "Low-balance alerts are off.");
  });
}

// ---------------------------------------------------------------------------------------------------------
// API keys

async function loadKeys() {
  renderGate($("#keys-gate"), "create API keys");
  const list = await api("/v1/keys");
  state.keys = list.data || [];
  renderKeys();
}

function renderKeys() {
  const body = $("#keys-table tbody");
  body.replaceChildren(...state.keys.map((key) => el("tr", { "data-key": key.id },
    el("td", { class: "wrap" }, key.name),
    el("td", null, el("code", { class: "mono" }, key.prefix + "…")),
    el("td", null, formatDateTime(key.created_at)),
    el("td", null, key.last_used_at ? formatDateTime(key.last_used_at) : "Never"),
    el("td", null, key.expires_at ? formatDateTime(key.expires_at) : "Never"),
    el("td", { class: "wrap" }, key.allowed_models ? key.allowed_models.join(", ") : "All"),
    el("td", { class: "wrap" }, rateLimitsText(key.rate_limits)),
    el("td", { class: "wrap" }, spendText(key)),
    el("td", { class: "actions" }, revokeButton(key)))));
  show($("#keys-empty"), state.keys.length === 0);
}

/** "60 requests/min, 10,000 tokens/min", or "None". */
function rateLimitsText(limits) {
  const parts = [];
  if (limits && limits.requests_per_minute) parts.push(`${limits.requests_per_minute.toLocaleString("en-IN")} requests/min`);
  if (limits && limits.tokens_per_minute) parts.push(`${limits.tokens_per_minute.toLocaleString("en-IN")} tokens/min`);
  return parts.length ? parts.join(", ") : "None";
}

/** "Today ₹0.40 of ₹1.00; this month ₹0.40" per window the key counts, or "No limit". */
function spendText(key) {
  const limits = key.spend_limits_paise || {};
  const spent = key.spend_paise || {};
  const windows = [["daily", "Today"], ["monthly", "This month"], ["total", "In total"]];
  const parts = windows.filter(([w]) => spent[w] !== null && spent[w] !== undefined).map(([w, label]) =>
    `${label} ${paiseText(spent[w])}` + (limits[w] === null || limits[w] === undefined ? "" : ` of ${paiseText(limits[w])}`));
  return parts.length ? parts.join("; ") : "No limit";
}

function revokeButton(key) {
  return el("button", {
    type: "button", class: "secondary small", "data-revoke": key.id, "aria-label": `Revoke key ${key.name}`,
  }, "Revoke");
}

/** Revoking is two clicks on the same button (the second says "Confirm revoke"), with a Cancel beside it. */
async function onKeysTableClick(event) {
  const cancel = event.target.closest("[data-cancel-revoke]");
  if (cancel) {
    const key = state.keys.find((k) => k.id === cancel.dataset.cancelRevoke);
    const cell = cancel.closest("td");
    if (key) cell.replaceChildren(revokeButton(key));
    const restored = cell.querySelector("[data-revoke]");
    if (restored) restored.focus();
    return;
  }
  const button = event.target.closest("[data-revoke]");
  if (!button) return;
  const key = state.keys.find((k) => k.id === button.dataset.revoke);
  const name = key ? key.name : button.dataset.revoke;
  if (button.dataset.confirming !== "true") {
    button.dataset.confirming = "true";
    button.dataset.confirmRevoke = button.dataset.revoke; // also findable as [data-confirm-revoke]
    button.textContent = "Confirm revoke";
    button.className = "danger small";
    button.setAttribute("aria-label", `Confirm: revoke key ${name}. Programs using it stop working.`);
    button.after(el("button", {
      type: "button", class: "secondary small", "data-cancel-revoke": button.dataset.revoke,
      "aria-label": `Keep key ${name}`,
    }, "Cancel"));
    button.focus();
    return;
  }
  clearFlash();
  await busy(button, async () => {
    await api(`/v1/keys/${encodeURIComponent(button.dataset.revoke)}`, { method: "DELETE" });
    flash(`Key “${name}” revoked. It stops working within a minute.`);
    await loadKeys();
  });
}

async function onCreateKey(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  const limits = {};
  for (const window of ["daily", "monthly", "total"]) setFieldError(form.elements[`${window}_rupees`], "");
  for (const window of ["daily", "monthly", "total"]) {
    const input = form.elements[`${window}_rupees`];
    const text = input.value.trim();
    if (text === "") continue;
    const paise = rupeesToPaise(text);
    if (paise === null) {
      setFieldError(input, "Enter amounts in rupees, or leave them empty for no limit.");
      input.focus();
      return;
    }
    limits[window] = paise;
  }
  const body = { name: form.elements.name.value.trim() };
  if (Object.keys(limits).length) body.spend_limits_paise = limits;
  await busy(form, async () => {
    const created = await api("/v1/keys", { method: "POST", body });
    form.reset();
    setText("#new-key-value", created.key);
    setText("#copy-key-status", "");
    show($("#new-key"), true);
    $("#new-key").focus();
    flash(`Key “${created.name}” created. Copy it now: it is not shown again.`);
    await loadKeys();
  });
}

async function onCopyKey() {
  const code = $("#new-key-value");
  try {
    if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
    await navigator.clipboard.writeText(code.textContent);
    setText("#copy-key-status", "Copied to the clipboard.");
  } catch {
    // No clipboard access (plain http, permissions): select the key so Ctrl+C / ⌘C copies it.
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    setText("#copy-key-status", "The key is selected: press Ctrl+C (⌘C on a Mac) to copy it.");
  }
}

function hideNewKey() {
  setText("#new-key-value", "");
  setText("#copy-key-status", "");
  show($("#new-key"), false);
}

// ---------------------------------------------------------------------------------------------------------
// Usage: filters, charts, table, CSV

async function loadUsage() {
  const form = $("#usage-filter");
  const today = todayIst();
  form.elements.to.max = today;
  form.elements.from.max = today;
  if (!form.elements.to.value) form.elements.to.value = today;
  if (!form.elements.from.value) form.elements.from.value = addDays(form.elements.to.value, -29);
  try {
    state.keys = (await api("/v1/keys")).data || [];
  } catch (error) {
    if (error.handled) throw error;
    report(error); // the filter still works without key names
  }
  fillKeySelect();
  await applyUsageFilter();
}

function fillKeySelect() {
  const select = $("#usage-filter").elements.key_id;
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "All keys"),
    ...state.keys.map((key) => el("option", { value: key.id }, `${key.name} (${key.prefix}…)`)));
  // A key chosen before (even one revoked since) stays chosen.
  if (chosen && !state.keys.some((k) => k.id === chosen)) select.append(el("option", { value: chosen }, chosen));
  select.value = chosen;
}

/** The form's IST days as the API's RFC 3339 window: from 00:00 of the first day to the end of the last. */
function usageQueryFromForm() {
  const f = $("#usage-filter").elements;
  const from = f.from.value;
  const to = f.to.value;
  if (!dayToUtcDate(from) || !dayToUtcDate(to)) throw new Error("Choose both dates of the range.");
  if (from > to) throw new Error("The first day must not be after the last.");
  return {
    from: `${from}T00:00:00.000+05:30`,
    to: `${to}T23:59:59.999+05:30`,
    model: f.model.value.trim(),
    key_id: f.key_id.value,
    fromDay: from,
    toDay: to,
  };
}

function apiQuery(query) {
  return { from: query.from, to: query.to, model: query.model, key_id: query.key_id };
}

async function applyUsageFilter() {
  const query = usageQueryFromForm();
  state.usageQuery = query;
  const [days, models] = await Promise.all([
    api("/v1/usage/summary", { query: { ...apiQuery(query), group_by: "day" } }),
    api("/v1/usage/summary", { query: { ...apiQuery(query), group_by: "model" } }),
    loadUsagePage(true),
  ]);
  renderDays(query, days.data || []);
  renderModels(models.data || []);
}

/**
 * Charts are drawn with one SVG unit per CSS pixel of their current width, so their 12 px labels stay
 * 12 px from 360 px phones to desktops; a resize redraws them.
 */
function chartWidth(svg) {
  return Math.max(280, Math.round(svg.getBoundingClientRect().width) || 640);
}

function redrawCharts() {
  if (!state.charts || $("#view-usage").classList.contains("hidden")) return;
  drawDayChart($("#usage-chart"), state.charts.series);
  drawModelChart($("#usage-models"), state.charts.models);
}

async function onUsageFilter(event) {
  event.preventDefault();
  clearFlash();
  await busy(event.currentTarget, applyUsageFilter);
}

function keyLabel(keyId) {
  const key = state.keys.find((k) => k.id === keyId);
  return key ? key.name : keyId;
}

async function loadUsagePage(reset) {
  if (reset) {
    state.usageCursor = null;
    emptyTable("#usage-table");
  }
  const page = await api("/v1/usage", {
    query: { ...apiQuery(state.usageQuery), limit: USAGE_PAGE, cursor: state.usageCursor },
  });
  const body = $("#usage-table tbody");
  for (const row of page.data || []) {
    body.append(el("tr", null,
      el("td", null, formatDateTime(row.created_at)),
      el("td", { class: "wrap" }, row.model),
      el("td", { class: "wrap" }, ranIn(row)),
      el("td", { class: "wrap" }, keyLabel(row.key_id)),
      el("td", { class: "num" }, formatNumber(row.prompt_tokens)),
      el("td", { class: "num" }, formatNumber(row.completion_tokens)),
      el("td", { class: "num" }, rupees(row.cost_inr)),
      el("td", { class: "num" }, `${formatNumber(row.latency_ms)} ms`),
      el("td", null, row.status + (row.estimated ? " (estimated)" : ""))));
  }
  state.usageCursor = page.has_more ? page.next_cursor : null;
  show($("#usage-more"), Boolean(page.has_more));
  show($("#usage-empty"), body.childElementCount === 0);
}

const COUNTRY_NAMES = { IN: "India", US: "United States" };

/** The public catalog (`/catalog.json`, the one the API routes by): each model, its limits, INR prices and
 *  the providers it runs on, in the order they are tried, with their country. */
async function loadModels() {
  const response = await fetch("/catalog.json", { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error("The model list could not be loaded.");
  const catalog = await response.json();
  const providers = catalog.providers || {};
  const perMillion = (paise) => "₹" + (Number(paise) / 100).toFixed(2);
  const rows = (catalog.models || []).map((m) => {
    const names = [...new Set((m.routes || []).map((r) => r.provider))];
    const where = names.map((name) => {
      const site = providers[name] || {};
      return `${site.legal_name || name} (${COUNTRY_NAMES[site.country] || site.country || "?"})`;
    });
    const inIndia = names.some((name) => (providers[name] || {}).country === "IN");
    return el("tr", null,
      el("td", null, el("code", null, m.id)),
      el("td", { class: "num" }, formatNumber(m.context_length)),
      el("td", { class: "num" }, formatNumber(m.max_output_tokens)),
      el("td", { class: "num" }, perMillion(m.input_paise_per_million)),
      el("td", { class: "num" }, perMillion(m.output_paise_per_million)),
      el("td", { class: "wrap" }, where.join(", ")),
      el("td", null, inIndia ? "Yes" : "No"));
  });
  $("#models-table tbody").replaceChildren(...rows);
}

/** Where a call ran: "neevcloud (India)"; the provider alone when its country is not known. */
function ranIn(row) {
  if (!row.country) return row.provider || "";
  return `${row.provider} (${COUNTRY_NAMES[row.country] || row.country})`;
}

async function onUsageMore(event) {
  await busy(event.currentTarget, () => loadUsagePage(false));
}

/** One entry per IST day of the range (days without calls as zero), from the per-day summary. */
function dailySeries(query, summary) {
  const byDay = new Map(summary.map((d) => [d.group, d]));
  const series = [];
  const spanDays = Math.round((dayToUtcDate(query.toDay) - dayToUtcDate(query.fromDay)) / 86400000) + 1;
  if (spanDays > 400) {
    // Too many bars to read: show only the days that had calls.
    return summary.map((d) => ({
      day: d.group, cost: d.cost, costInr: d.cost_inr, tokens: d.total_tokens, requests: d.requests,
    }));
  }
  for (let day = query.fromDay; day <= query.toDay; day = addDays(day, 1)) {
    const d = byDay.get(day);
    series.push(d
      ? { day, cost: d.cost, costInr: d.cost_inr, tokens: d.total_tokens, requests: d.requests }
      : { day, cost: 0, costInr: "0.00", tokens: 0, requests: 0 });
  }
  return series;
}

function renderDays(query, summary) {
  const series = dailySeries(query, summary);
  const totalCost = unitsToDecimal(sumUnits(summary.map((d) => d.cost)));
  const tokens = summary.reduce((n, d) => n + d.total_tokens, 0);
  const requests = summary.reduce((n, d) => n + d.requests, 0);
  setText("#usage-totals",
    `${formatNumber(requests)} requests, ${formatNumber(tokens)} tokens, ${rupees(totalCost)} `
    + `from ${formatPlainDate(query.fromDay)} to ${formatPlainDate(query.toDay)}.`);
  state.charts = { ...(state.charts || {}), series };
  drawDayChart($("#usage-chart"), series);
  $("#usage-days tbody").replaceChildren(...series.filter((d) => d.requests > 0).map((d) => el("tr", null,
    el("td", null, formatPlainDate(d.day)),
    el("td", { class: "num" }, formatNumber(d.requests)),
    el("td", { class: "num" }, formatNumber(d.tokens)),
    el("td", { class: "num" }, rupees(d.costInr)))));
}

/** Bars of spend per day and a line of tokens per day, each on its own scale. Geometry only uses floats. */
function drawDayChart(svg, series) {
  const width = chartWidth(svg);
  const height = 220;
  const left = 60;
  const right = 44;
  const top = 24;
  const bottom = 28;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const maxCost = Math.max(0, ...series.map((d) => Number(d.cost)));
  const maxTokens = Math.max(0, ...series.map((d) => d.tokens));
  const maxCostInr = (series.find((d) => Number(d.cost) === maxCost) || { costInr: "0.00" }).costInr;
  svg.append(
    svgEl("line", { class: "chart-axis", x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH }),
    svgEl("line", { class: "chart-grid", x1: left, y1: top, x2: left + plotW, y2: top }),
    svgEl("text", { class: "chart-label", x: left - 6, y: top + 4, "text-anchor": "end" }, shortRupees(maxCostInr)),
    svgEl("text", { class: "chart-label", x: left - 6, y: top + plotH + 4, "text-anchor": "end" }, "₹0"),
    svgEl("text", { class: "chart-label chart-label-alt", x: left + plotW + 6, y: top + 4 }, compactNumber(maxTokens)),
    svgEl("text", { class: "chart-label chart-label-alt", x: left + plotW + 6, y: top + plotH + 4 }, "0"),
    svgEl("rect", { class: "chart-bar", x: left, y: 6, width: 10, height: 10 }),
    svgEl("text", { class: "chart-label", x: left + 14, y: 15 }, "Spend (₹)"),
    svgEl("line", { class: "chart-line", x1: left + 90, y1: 11, x2: left + 106, y2: 11 }),
    svgEl("text", { class: "chart-label", x: left + 110, y: 15 }, "Tokens"));
  if (series.length === 0) return;
  if (maxCost === 0 && maxTokens === 0) {
    svg.append(svgEl("text", { class: "chart-empty", x: left + plotW / 2, y: top + plotH / 2, "text-anchor": "middle" },
      "No usage in this range"));
  }
  const step = plotW / series.length;
  const barW = Math.max(1, step * 0.7);
  const points = [];
  series.forEach((d, i) => {
    const x = left + i * step + (step - barW) / 2;
    const h = maxCost > 0 ? (Number(d.cost) / maxCost) * plotH : 0;
    const bar = svgEl("rect", {
      class: "chart-bar", x: x.toFixed(2), y: (top + plotH - h).toFixed(2), width: barW.toFixed(2),
      height: Math.max(h, Number(d.cost) > 0 ? 1 : 0).toFixed(2),
    }, svgEl("title", null,
      `${formatPlainDate(d.day)}: ${rupees(d.costInr)}, ${formatNumber(d.tokens)} tokens, ${formatNumber(d.requests)} requests`));
    svg.append(bar);
    const ty = maxTokens > 0 ? top + plotH - (d.tokens / maxTokens) * plotH : top + plotH;
    points.push(`${(left + i * step + step / 2).toFixed(2)},${ty.toFixed(2)}`);
  });
  if (maxTokens > 0) svg.append(svgEl("polyline", { class: "chart-line", points: points.join(" "), fill: "none" }));
  // Day labels: first, middle and last, so they never overlap at 360 px.
  const labelled = new Set([0, Math.floor((series.length - 1) / 2), series.length - 1]);
  for (const i of labelled) {
    const anchor = i === 0 ? "start" : i === series.length - 1 ? "end" : "middle";
    const x = i === 0 ? left : i === series.length - 1 ? left + plotW : left + i * step + step / 2;
    svg.append(svgEl("text", { class: "chart-label", x: x.toFixed(2), y: height - 8, "text-anchor": anchor },
      shortDayUtc.format(dayToUtcDate(series[i].day))));
  }
}

function compactNumber(n) {
  return new Intl.NumberFormat("en-IN", { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

function renderModels(summary) {
  const rows = [...summary].sort((a, b) => Number(b.cost) - Number(a.cost));
  const list = $("#usage-model-list");
  const known = new Set([...list.options].map((o) => o.value));
  for (const row of rows) if (!known.has(row.group)) list.append(el("option", { value: row.group }));
  $("#usage-models-table tbody").replaceChildren(...rows.map((row) => el("tr", null,
    el("td", { class: "wrap" }, row.group),
    el("td", { class: "num" }, formatNumber(row.requests)),
    el("td", { class: "num" }, formatNumber(row.prompt_tokens)),
    el("td", { class: "num" }, formatNumber(row.completion_tokens)),
    el("td", { class: "num" }, rupees(row.cost_inr)))));
  state.charts = { ...(state.charts || {}), models: rows };
  drawModelChart($("#usage-models"), rows);
}

/** Horizontal bars of spend per model: a label line (model; spend and tokens) above each bar. */
function drawModelChart(svg, rows) {
  const width = chartWidth(svg);
  const rowH = 38;
  const height = Math.max(1, rows.length) * rowH + 4;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  if (rows.length === 0) {
    svg.setAttribute("viewBox", `0 0 ${width} 40`);
    svg.append(svgEl("text", { class: "chart-empty", x: width / 2, y: 24, "text-anchor": "middle" }, "No usage in this range"));
    return;
  }
  const maxCost = Math.max(...rows.map((r) => Number(r.cost)));
  const maxChars = Math.max(8, Math.floor((width - 150) / 7)); // room left of the figures, about 7 px a character
  rows.forEach((row, i) => {
    const y = 2 + i * rowH;
    const w = maxCost > 0 ? (Number(row.cost) / maxCost) * width : 0;
    const name = row.group.length > maxChars ? row.group.slice(0, maxChars - 1) + "…" : row.group;
    svg.append(
      svgEl("text", { class: "chart-label chart-label-strong", x: 0, y: y + 13 }, svgEl("title", null, row.group), name),
      svgEl("text", { class: "chart-label", x: width, y: y + 13, "text-anchor": "end" },
        `${shortRupees(row.cost_inr)} · ${compactNumber(row.total_tokens)} tokens`),
      svgEl("rect", {
        class: "chart-bar chart-bar-model", x: 0, y: y + 19, height: 12,
        width: Math.max(w, Number(row.cost) > 0 ? 1 : 0).toFixed(2),
      }, svgEl("title", null, `${row.group}: ${rupees(row.cost_inr)}, `
        + `${formatNumber(row.total_tokens)} tokens, ${formatNumber(row.requests)} requests`)));
  });
}

const CSV_COLUMNS = [
  ["time_utc", (r) => r.created_at],
  ["time_ist", (r) => istTimestamp(r.created_at)],
  ["request_id", (r) => r.id],
  ["key_id", (r) => r.key_id],
  ["key_name", (r) => { const k = state.keys.find((key) => key.id === r.key_id); return k ? k.name : ""; }],
  ["model", (r) => r.model],
  ["provider", (r) => r.provider],
  ["country", (r) => r.country],
  ["prompt_tokens", (r) => r.prompt_tokens],
  ["completion_tokens", (r) => r.completion_tokens],
  ["total_tokens", (r) => r.total_tokens],
  ["cost_inr", (r) => r.cost_inr],
  ["latency_ms", (r) => r.latency_ms],
  ["ttft_ms", (r) => r.ttft_ms],
  ["status", (r) => r.status],
  ["estimated", (r) => (r.estimated ? "true" : "false")],
];

const istParts = new Intl.DateTimeFormat("en-GB", {
  timeZone: IST, year: "numeric", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});

/** "2026-05-21 14:03:07" in IST, for spreadsheets. */
function istTimestamp(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso || "";
  const p = Object.fromEntries(istParts.formatToParts(date).map((part) => [part.type, part.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

/**
 * One CSV field (RFC 4180). Text that a spreadsheet would run as a formula (starting with = + - @, or a tab
 * or carriage return) gets a leading apostrophe: key names and model ids are chosen by whoever made them.
 * Numbers from the API are written as numbers.
 */
function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = "'" + text;
  if (/[",\r\n]/.test(text) || /^\s|\s$/.test(text)) text = '"' + text.replace(/"/g, '""') + '"';
  return text;
}

function usageCsv(rows) {
  const lines = [CSV_COLUMNS.map(([name]) => name).join(",")];
  for (const row of rows) lines.push(CSV_COLUMNS.map(([, pick]) => csvCell(pick(row))).join(","));
  return lines.join("\r\n") + "\r\n";
}

async function onUsageCsv(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    const query = state.usageQuery || usageQueryFromForm();
    const rows = [];
    let cursor = null;
    // Every page of the filter the table shows, up to 10,000 rows.
    do {
      const page = await api("/v1/usage", { query: { ...apiQuery(query), limit: CSV_PAGE, cursor } });
      rows.push(...(page.data || []));
      cursor = page.has_more ? page.next_cursor : null;
      setText("#usage-csv-status", `Fetched ${formatNumber(rows.length)} rows…`);
    } while (cursor && rows.length < CSV_MAX_ROWS);
    const truncated = rows.length > CSV_MAX_ROWS || Boolean(cursor);
    const kept = rows.slice(0, CSV_MAX_ROWS);
    if (state.csvUrl) URL.revokeObjectURL(state.csvUrl);
    // The BOM makes spreadsheet programs read the file as UTF-8 (₹ signs, names in any script).
    state.csvUrl = URL.createObjectURL(new Blob(["\uFEFF" + usageCsv(kept)], { type: "text/csv;charset=utf-8" }));
    const link = $("#usage-csv-link");
    link.href = state.csvUrl;
    link.download = `inferex-usage-${query.fromDay}-to-${query.toDay}.csv`;
    link.textContent = `Download CSV (${formatNumber(kept.length)} rows)`;
    show(link, true);
    setText("#usage-csv-status", truncated
      ? `The CSV holds the newest ${formatNumber(CSV_MAX_ROWS)} rows; narrow the dates for the rest.`
      : `The CSV holds ${formatNumber(kept.length)} rows.`);
    link.click();
  });
}

// ---------------------------------------------------------------------------------------------------------
// Account & privacy centre

async function loadAccount() {
  const results = await Promise.allSettled([
    api("/v1/account").then((account) => {
      state.account = account;
      updateChrome();
      renderAccount(account);
    }),
    loadSessions(),
    loadLogins(),
    loadPrivacyRequests(),
    loadNominee(),
    getPrivacy().then((notice) => renderNotice($("#privacy-notice"), notice)),
    resumeExport(),
  ]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) report(failed.reason);
}

function renderAccount(account) {
  const email = account.pending_email
    ? `${account.email} (change to ${account.pending_email} waits for the link sent there)`
    : account.email + (account.email_verified ? "" : " (not confirmed yet)");
  setText("#account-email", email);
  setText("#account-dob", formatPlainDate(account.date_of_birth));
  setText("#account-created", formatDate(account.created_at));
  setText("#account-policy", account.accepted_policy_version || "–");
  const form = $("#account-form");
  form.elements.full_name.value = account.full_name;
  form.elements.marketing_consent.checked = Boolean(account.marketing_consent);
}

async function onAccountSave(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  await busy(form, async () => {
    state.account = await api("/v1/account", {
      method: "PATCH",
      body: { full_name: form.elements.full_name.value.trim(), marketing_consent: form.elements.marketing_consent.checked },
    });
    updateChrome();
    renderAccount(state.account);
    flash("Your details are saved.");
    loadPrivacyRequests().catch(report); // a correction is recorded as a request
  });
}

async function onPasswordChange(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  if (form.elements.new_password.value !== form.elements.new_password_repeat.value) {
    flash("The two new passwords differ.", "error");
    form.elements.new_password_repeat.focus();
    return;
  }
  clearFlash();
  await busy(form, async () => {
    const answer = await api("/v1/account/password", {
      method: "POST",
      body: { current_password: form.elements.current_password.value, new_password: form.elements.new_password.value },
    });
    form.reset();
    const ended = answer.other_sessions_ended || 0;
    flash(`Your password is changed. ${ended} other ${ended === 1 ? "session was" : "sessions were"} signed out.`);
    await loadSessions();
  });
}

async function loadSessions() {
  const list = await api("/v1/auth/sessions");
  $("#sessions-table tbody").replaceChildren(...(list.data || []).map((s) => el("tr", null,
    el("td", { class: "wrap" }, s.user_agent || "Unknown device"),
    el("td", { class: "mono" }, s.ip || "–"),
    el("td", null, formatDateTime(s.created_at)),
    el("td", null, formatDateTime(s.last_seen_at)),
    el("td", { class: "actions" }, s.current
      ? el("span", { class: "badge badge-verified" }, "This device")
      : el("button", {
        type: "button", class: "secondary small", "data-revoke-session": s.id,
        "aria-label": `Sign out the session on ${s.user_agent || "an unknown device"} from ${s.ip || "an unknown address"}`,
      }, "Sign out")))));
}

async function onSessionsClick(event) {
  const button = event.target.closest("[data-revoke-session]");
  if (!button) return;
  clearFlash();
  await busy(button, async () => {
    await api(`/v1/auth/sessions/${encodeURIComponent(button.dataset.revokeSession)}`, { method: "DELETE" });
    flash("That session is signed out.");
    await loadSessions();
  });
}

async function onSignOutEverywhere(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    const answer = await api("/v1/auth/sessions", { method: "DELETE" });
    const ended = answer && answer.sessions_ended;
    signedOut(`Signed out everywhere (${ended} ${ended === 1 ? "session" : "sessions"}, this one included).`);
  });
}

const LOGIN_OUTCOMES = {
  success: "Signed in", invalid_credentials: "Wrong e-mail or password", throttled: "Blocked: too many attempts",
};

async function loadLogins() {
  const attempts = await api("/v1/account/logins", { query: { limit: 20 } });
  $("#logins-table tbody").replaceChildren(...(attempts || []).map((a) => el("tr", { class: a.success ? "" : "row-warn" },
    el("td", null, formatDateTime(a.at)),
    el("td", null, LOGIN_OUTCOMES[a.outcome] || a.outcome),
    el("td", { class: "mono" }, a.ip || "–"),
    el("td", { class: "wrap" }, a.user_agent || "–"))));
}

const REQUEST_KINDS = {
  access: "Access (data export)", correction: "Correction", erasure: "Erasure", grievance: "Grievance",
  nominee: "Your nominee's request",
};

/** The nominee (404: none named). */
async function loadNominee() {
  let nominee = null;
  try {
    nominee = await api("/v1/account/nominee");
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  $("#nominee-current").textContent = nominee
    ? `Your nominee: ${nominee.name} (${nominee.email}), since ${formatDateTime(nominee.updated_at)}.`
    : "You have not named a nominee.";
  show($("#nominee-remove"), Boolean(nominee));
}

async function onNomineeSave(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearFlash();
  await busy(form, async () => {
    await api("/v1/account/nominee", {
      method: "PUT", body: { name: form.elements.name.value, email: form.elements.email.value.trim() },
    });
    form.reset();
    flash("Nominee saved. We e-mailed you about the change.");
    await loadNominee();
  });
}

async function onNomineeRemove(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    await api("/v1/account/nominee", { method: "DELETE" });
    flash("Nominee removed.");
    await loadNominee();
  });
}

async function loadPrivacyRequests() {
  const list = await api("/v1/privacy/requests", { query: { limit: 100 } });
  const rows = list.data || [];
  $("#privacy-requests tbody").replaceChildren(...rows.map((r) => el("tr", null,
    el("td", null, REQUEST_KINDS[r.kind] || r.kind),
    el("td", null, r.status),
    el("td", null, formatDateTime(r.received_at)),
    el("td", null, formatDate(r.due_at)),
    el("td", { class: "wrap" }, r.outcome || "", r.completed_at ? ` (${formatDateTime(r.completed_at)})` : "",
      ...(r.timeline || []).map((step) => el("span", { class: "step" }, ` · ${formatDateTime(step.at)}: ${step.note}`))))));
  show($("#privacy-requests-empty"), rows.length === 0);
}

/** A grievance, or a correction the dashboard cannot make (date of birth, KYC details), for a person. */
async function onRequestSubmit(event) {
  event.preventDefault();
  const form = event.currentTarget;
  clearFlash();
  await busy(form, async () => {
    const made = await api("/v1/privacy/requests", {
      method: "POST", body: { kind: form.elements.kind.value, message: form.elements.message.value },
    });
    form.reset();
    flash(`Request ${made.id} received; we answer by ${formatDate(made.due_at)} and e-mailed you a receipt.`);
    await loadPrivacyRequests();
  });
}

/** The public notice: policy version, what is kept how long, who to write to. */
function renderNotice(container, notice) {
  const retention = el("dl", { class: "details" });
  for (const item of notice.retention || []) {
    retention.append(el("dt", null, capitalise(item.what || item.data)), el("dd", null, item.kept));
  }
  const officer = notice.grievance_officer || {};
  const contacts = notice.contacts || {};
  container.replaceChildren(
    el("p", null, `Policy version ${notice.policy_version}. `
      + `We answer data-rights requests within ${notice.response_days || 30} days.`),
    el("h4", null, "What we keep, and for how long"),
    retention,
    el("h4", null, "Where your prompts are processed"),
    providersList(notice.model_providers || []),
    el("p", { class: "hint" }, notice.data_residency || ""),
    el("h4", null, "Questions and complaints"),
    el("p", null, `Grievance officer: ${officer.name || ""} `, mailLink(officer.email)),
    el("p", { class: "hint" }, (notice.grievances || {}).board || ""),
    el("p", null, "Privacy requests: ", mailLink(contacts.privacy), " · Security reports: ", mailLink(contacts.security)));
}

/** The model providers a prompt may go to, each with its country and whether that leaves India. */
function providersList(providers) {
  const list = el("ul", { class: "providers" });
  for (const p of providers) {
    const where = p.transfer_outside_india ? `${p.country}: outside India` : `${p.country}: in India`;
    list.append(el("li", null, el("strong", null, p.legal_name || p.name), ` (${p.name}), ${where}, region ${p.region}. `,
      p.receives || ""));
  }
  return list;
}

function mailLink(address) {
  // Only a plain address becomes a mailto: link.
  if (typeof address !== "string" || !/^[^\s@<>"]+@[^\s@<>"]+$/.test(address)) return "–";
  return el("a", { href: "mailto:" + address }, address);
}

async function onExportRequest(event) {
  clearFlash();
  await busy(event.currentTarget, async () => {
    const passwordInput = $("#export-password");
    const password = passwordInput ? passwordInput.value : "";
    // The PAN in full only with the password again; a session alone gets it masked.
    const exported = await api("/v1/privacy/exports", { method: "POST", body: password ? { password } : {} });
    if (passwordInput) passwordInput.value = "";
    window.sessionStorage.setItem(EXPORT_STORAGE_KEY, exported.id);
    renderExport(exported);
    flash("Your data export is being prepared.");
    pollExport(exported.id, 1000);
    loadPrivacyRequests().catch(report);
  });
}

async function resumeExport() {
  const id = window.sessionStorage.getItem(EXPORT_STORAGE_KEY);
  if (!id) return;
  try {
    const exported = await api(`/v1/privacy/exports/${encodeURIComponent(id)}`);
    renderExport(exported);
    if (exported.status === "pending") pollExport(id, 2000);
  } catch (error) {
    if (error.status === 404) window.sessionStorage.removeItem(EXPORT_STORAGE_KEY); // expired after 7 days
    else throw error;
  }
}

/** Polls GET /v1/privacy/exports/{id} with a growing delay while the account view is open. */
function pollExport(id, delay) {
  stopExportPolling();
  state.exportTimer = window.setTimeout(async () => {
    state.exportTimer = null;
    try {
      const exported = await api(`/v1/privacy/exports/${encodeURIComponent(id)}`);
      renderExport(exported);
      if (exported.status === "pending") pollExport(id, Math.min(delay * 1.5, 10000));
      else loadPrivacyRequests().catch(report);
    } catch (error) {
      report(error);
    }
  }, delay);
}

function stopExportPolling() {
  if (state.exportTimer) window.clearTimeout(state.exportTimer);
  state.exportTimer = null;
}

function renderExport(exported) {
  const box = $("#export-status");
  if (exported.status === "ready") {
    const url = safeLink(exported.download_url);
    box.replaceChildren(
      el("p", null, `Ready (requested ${formatDateTime(exported.created_at)}).`),
      url
        ? el("p", null, el("a", { id: "export-download", class: "download", href: url, download: "", rel: "noopener noreferrer" },
          `Download your data${exported.size_bytes ? ` (${humanBytes(exported.size_bytes)})` : ""}`))
        : null,
      exported.expires_at
        ? el("p", { class: "hint" }, `This link works until ${formatDateTime(exported.expires_at)} IST.`)
        : null,
      exported.download_needs_password ? exportPasswordForm(exported.id) : null);
  } else if (exported.status === "failed") {
    window.sessionStorage.removeItem(EXPORT_STORAGE_KEY);
    box.replaceChildren(el("p", { class: "error" }, "The export could not be built. Please request it again."));
  } else {
    box.replaceChildren(el("p", null, `Preparing your data… (requested ${formatDateTime(exported.created_at)}). `
      + "You can leave this page; the file waits for you for 7 days."));
  }
}

/** The file holds your PAN in full: its link is given only with your password again. */
function exportPasswordForm(id) {
  const input = el("input", { id: "export-download-password", type: "password", autocomplete: "current-password", required: "" });
  const form = el("form", { id: "export-download-form", novalidate: "" },
    el("label", { for: "export-download-password" }, "Your password, to download the file (it holds your PAN in full)"),
    input,
    el("button", { type: "submit" }, "Get the download link"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearFlash();
    await busy(form, async () => {
      const exported = await api(`/v1/privacy/exports/${encodeURIComponent(id)}/download`, {
        method: "POST", body: { password: input.value },
      });
      renderExport(exported);
    });
  });
  return form;
}

/** http(s) links only: never a javascript: or data: URL in an href. */
function safeLink(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

const RETAINED_LABELS = {
  account: "Account and consent records",
  kyc: "KYC record (PAN encrypted; of the Aadhaar only the last four digits), the provider's answers, consent records and verification decisions",
  payments: "Wallet, payments and ledger",
  usage_logs: "Usage logs (no prompts or completions)",
  login_records: "Sign-in records (IP address and browser)",
  privacy_requests: "Your data-rights requests and their answers, this closure among them",
  mail_suppression: "The note not to e-mail an address that bounced or reported spam",
};

async function onCloseAccount(event) {
  event.preventDefault();
  const form = event.currentTarget;
  if (!form.reportValidity()) return;
  clearFlash();
  await busy(form, async () => {
    const closure = await api("/v1/account", { method: "DELETE", body: { password: form.elements.password.value } });
    resetUserState();
    state.closure = closure;
    updateChrome();
    renderClosure(closure);
    window.history.replaceState(null, "", "#/closed");
    focusView(showView("closed"), { focus: true });
    flash("Your account is closed.");
  });
}

function renderClosure(closure) {
  $("#closed-retained tbody").replaceChildren(...(closure.retained || []).map((item) => el("tr", null,
    el("td", null, RETAINED_LABELS[item.data] || item.data),
    el("td", null, formatDate(item.until)),
    el("td", null, item.reason || ""))));
  const refund = BigInt(closure.refund_requested || 0);
  setText("#closed-refund", refund > 0n
    ? `${rupees(unitsToDecimal(refund))} of unspent balance will be refunded to you by bank transfer.`
    : "There was no unspent balance to refund.");
  const request = closure.request || {};
  setText("#closed-request", request.id
    ? `Erasure request ${request.id}, received ${formatDateTime(request.received_at)}; we complete it by ${formatDate(request.due_at)}.`
    : "");
}

// ---------------------------------------------------------------------------------------------------------
// Start

function wireEvents() {
  $(".skip-link").addEventListener("click", (event) => {
    // The hash is the router's: move focus without touching it.
    event.preventDefault();
    $("#main").focus();
  });
  $("#login-form").addEventListener("submit", onLogin);
  $("#signup-form").addEventListener("submit", onSignup);
  $("#forgot-form").addEventListener("submit", onForgot);
  $("#logout").addEventListener("click", onLogout);
  $("#resend-verification").addEventListener("click", onResendVerification);
  $("#accept-policy").addEventListener("click", onAcceptPolicy);

  const kycForm = $("#kyc-form");
  kycForm.addEventListener("submit", onKycSubmit);
  kycForm.addEventListener("input", onKycInput);
  kycForm.addEventListener("focusout", onKycBlur);
  kycForm.addEventListener("change", onKycInput);
  $("#kyc-digilocker").addEventListener("click", onDigilocker);

  $("#topup-form").addEventListener("submit", onTopup);
  $("#threshold-form").addEventListener("submit", onThreshold);
  $("#billing-form").addEventListener("submit", onBillingProfile);
  $("#tax-documents-more").addEventListener("click", (event) => busy(event.currentTarget, () => loadTaxDocuments(false)).catch(report));
  $("#spend-limit-form").addEventListener("submit", onSpendLimit);
  $("#ledger-more").addEventListener("click", onLedgerMore);

  $("#key-form").addEventListener("submit", onCreateKey);
  $("#keys-table").addEventListener("click", onKeysTableClick);
  $("#copy-key").addEventListener("click", onCopyKey);
  $("#hide-key").addEventListener("click", hideNewKey);

  $("#usage-filter").addEventListener("submit", onUsageFilter);
  $("#usage-more").addEventListener("click", onUsageMore);
  $("#usage-csv").addEventListener("click", onUsageCsv);

  $("#account-form").addEventListener("submit", onAccountSave);
  $("#password-form").addEventListener("submit", onPasswordChange);
  $("#sessions-table").addEventListener("click", onSessionsClick);
  $("#sign-out-everywhere").addEventListener("click", onSignOutEverywhere);
  $("#export-request").addEventListener("click", onExportRequest);
  $("#close-form").addEventListener("submit", onCloseAccount);
  $("#nominee-form").addEventListener("submit", onNomineeSave);
  $("#nominee-remove").addEventListener("click", onNomineeRemove);
  $("#request-form").addEventListener("submit", onRequestSubmit);

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(redrawCharts, 150);
  });

  window.addEventListener("hashchange", () => {
    if (!currentRoute()) return; // not a route (e.g. an in-page anchor)
    if (state.keepFlash) state.keepFlash = false;
    else clearFlash();
    render({ focus: true });
  });
}

async function boot() {
  wireEvents();
  getConfig();
  try {
    state.account = await api("/v1/account", { auth: false });
  } catch (error) {
    state.account = null;
    if (error.status !== 401) report(error);
  }
  updateChrome();
  await render({ focus: false });
}

boot();
