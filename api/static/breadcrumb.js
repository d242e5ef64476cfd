/*!
 * breadcrumb.js — Breadcrumb's first-party tracking snippet (Segment Tracking API format).
 *
 *   <script src="https://breadcrumb.example.com/breadcrumb.js"
 *           data-write-key="wk_…"                 (or ?writeKey=… on the page URL)
 *           data-cookie-domain=".example.com"     (optional: share the id across subdomains)
 *           data-api-host="https://breadcrumb.example.com"  (optional: default, where this file came from)
 *           data-auto-page="false"></script>      (optional: no page call on load)
 *
 *   breadcrumb.page(name?, properties?)
 *   breadcrumb.track("Added to Cart", {cart_id, sku, price, quantity})
 *   breadcrumb.identify(userId?, {email, phone, …})
 *   breadcrumb.anonymousId()   breadcrumb.reset()   breadcrumb.flush() → Promise
 *
 * The anonymous id is stable for the browser: a first-party cookie (on the cookie domain, so
 * shop.example.com and checkout.example.com share it) mirrored in localStorage (so clearing one of
 * them keeps the id). Calls are queued in localStorage and sent as a /v1/batch with `keepalive`, so a
 * call made just before the page navigates away is sent on the next page if it did not get through;
 * every call has a messageId, so a resend is stored once.
 *
 * On a Shopify theme (window.Shopify), the anonymous id also goes into the cart attributes as
 * `_breadcrumb_anonymous_id` (Ajax Cart API), once per device and cart: Shopify copies cart
 * attributes into the checkout's and the order's `note_attributes`, where the webhooks find the device.
 */
(function (window, document) {
  "use strict";
  if (window.breadcrumb && window.breadcrumb.VERSION) return; // loaded twice

  var VERSION = "1.0.0";
  var KEYS = { anonymousId: "bc.anonymousId", userId: "bc.userId", traits: "bc.traits", queue: "bc.queue",
    shopifyCart: "bc.shopifyCart" };
  var CART_ATTRIBUTE = "_breadcrumb_anonymous_id";
  var YEAR = 365 * 24 * 3600;
  var MAX_QUEUE = 200;
  var MAX_BATCH = 50;

  var script = document.currentScript || document.querySelector("script[data-write-key],script[src*='breadcrumb.js']");
  function attr(name) { return script ? script.getAttribute(name) : null; }
  function param(name) {
    try { return new URLSearchParams(window.location.search).get(name); } catch (e) { return null; }
  }
  function scriptOrigin() {
    try { return new URL(script.src, window.location.href).origin; } catch (e) { return window.location.origin; }
  }

  var config = {
    writeKey: attr("data-write-key") || param("writeKey") || "",
    apiHost: (attr("data-api-host") || scriptOrigin()).replace(/\/+$/, ""),
    cookieName: attr("data-cookie-name") || "bc_anonymous_id",
    cookieDomain: attr("data-cookie-domain") || "",
    autoPage: attr("data-auto-page") !== "false"
  };

  // ------------------------------------------------------------------ storage
  var memory = {};
  function lsGet(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return memory[key] || null; }
  }
  function lsSet(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { memory[key] = value; }
  }
  function lsRemove(key) {
    try { window.localStorage.removeItem(key); } catch (e) { delete memory[key]; }
  }
  function readCookie(name) {
    var pairs = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < pairs.length; i++) {
      var at = pairs[i].indexOf("=");
      if (pairs[i].slice(0, at) === name) {
        try { return decodeURIComponent(pairs[i].slice(at + 1)); } catch (e) { return null; }
      }
    }
    return null;
  }
  function writeCookie(name, value, maxAge) {
    var base = name + "=" + encodeURIComponent(value) + "; Path=/; Max-Age=" + maxAge + "; SameSite=Lax" +
      (window.location.protocol === "https:" ? "; Secure" : "");
    if (config.cookieDomain) {
      document.cookie = base + "; Domain=" + config.cookieDomain;
      if (readCookie(name) === value || maxAge <= 0) return;
      // The browser refused the domain (not a parent of this host): keep a host-only cookie instead.
    }
    document.cookie = base;
  }

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
    var bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) window.crypto.getRandomValues(bytes);
    else for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) { return (b + 0x100).toString(16).slice(1); }).join("");
    return hex.slice(0, 8) + "-" + hex.slice(8, 12) + "-" + hex.slice(12, 16) + "-" + hex.slice(16, 20) + "-" + hex.slice(20);
  }

  // ------------------------------------------------------------------ identity
  /** The cookie wins (it is what subdomains share); localStorage restores it when cookies were cleared. */
  function anonymousId() {
    var fromCookie = readCookie(config.cookieName);
    var fromStorage = lsGet(KEYS.anonymousId);
    var id = fromCookie || fromStorage || uuid();
    writeCookie(config.cookieName, id, YEAR); // (re)sets it and extends its life
    if (id !== fromStorage) lsSet(KEYS.anonymousId, id);
    return id;
  }
  function userId() { return lsGet(KEYS.userId); }
  function traits() {
    try { return JSON.parse(lsGet(KEYS.traits) || "{}") || {}; } catch (e) { return {}; }
  }

  // ------------------------------------------------------------------ the queue
  function readQueue() {
    try { var q = JSON.parse(lsGet(KEYS.queue) || "[]"); return Array.isArray(q) ? q : []; } catch (e) { return []; }
  }
  function writeQueue(queue) {
    if (queue.length) lsSet(KEYS.queue, JSON.stringify(queue.slice(-MAX_QUEUE)));
    else lsRemove(KEYS.queue);
  }
  function dropSent(ids) {
    writeQueue(readQueue().filter(function (m) { return ids.indexOf(m.messageId) < 0; }));
  }

  var inFlight = null;
  var retryTimer = null;
  var attempts = 0;

  /** Send what is queued, one batch at a time; resolves when the queue is empty or sending failed. */
  function flush() {
    if (inFlight) return inFlight.then(function () { return readQueue().length ? flush() : undefined; });
    var batch = readQueue().slice(0, MAX_BATCH);
    if (!batch.length) return Promise.resolve();
    if (!config.writeKey) {
      warn("no write key: add data-write-key to the script tag (or ?writeKey= to the page URL); nothing is sent");
      return Promise.resolve();
    }
    var ids = batch.map(function (m) { return m.messageId; });
    var body = JSON.stringify({ batch: batch, writeKey: config.writeKey, sentAt: new Date().toISOString() });
    inFlight = window.fetch(config.apiHost + "/v1/batch", {
      method: "POST",
      // text/plain keeps this a "simple" CORS request (no preflight), like analytics.js.
      headers: { "Content-Type": "text/plain" },
      body: body,
      keepalive: body.length < 60000,
      credentials: "omit"
    }).then(function (response) {
      if (response.ok || (response.status >= 400 && response.status < 500 && response.status !== 429)) {
        // Stored — or refused for good (bad key, bad message): resending would not help.
        if (!response.ok) warn("the API refused a batch (" + response.status + ")");
        dropSent(ids);
        attempts = 0;
        return true;
      }
      throw new Error("HTTP " + response.status);
    }).catch(function (error) {
      attempts += 1;
      if (attempts <= 6 && !retryTimer) {
        retryTimer = window.setTimeout(function () { retryTimer = null; flush(); }, Math.min(30000, 500 * Math.pow(2, attempts)));
      }
      warn("could not send (" + error.message + "); will retry");
      return false;
    }).then(function (sent) {
      inFlight = null;
      return sent && readQueue().length ? flush() : undefined;
    });
    return inFlight;
  }

  function warn(message) {
    if (window.console && window.console.warn) window.console.warn("breadcrumb.js: " + message);
  }

  function pageContext() {
    return {
      path: window.location.pathname,
      referrer: document.referrer,
      search: window.location.search,
      title: document.title,
      url: window.location.href
    };
  }

  function context() {
    var ctx = {
      library: { name: "breadcrumb.js", version: VERSION },
      page: pageContext(),
      userAgent: window.navigator.userAgent,
      locale: window.navigator.language
    };
    try { ctx.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { /* older browsers */ }
    return ctx;
  }

  function enqueue(type, fields) {
    var message = {
      type: type,
      messageId: uuid(),
      timestamp: new Date().toISOString(),
      anonymousId: anonymousId(),
      context: context()
    };
    var uid = userId();
    if (uid) message.userId = uid;
    for (var key in fields) if (Object.prototype.hasOwnProperty.call(fields, key)) message[key] = fields[key];
    var queue = readQueue();
    queue.push(message);
    writeQueue(queue);
    return flush();
  }

  // ------------------------------------------------------------------ Shopify cart attribute
  /** Write the anonymous id into the Shopify cart once per (device, cart); any failure only warns. */
  function tagShopifyCart() {
    if (!window.Shopify || typeof window.fetch !== "function") return Promise.resolve(false);
    var id = anonymousId();
    if (lsGet(KEYS.shopifyCart) === id + "|" + (readCookie("cart") || "")) return Promise.resolve(false);
    var root = (window.Shopify.routes && window.Shopify.routes.root) || "/";
    var attributes = {};
    attributes[CART_ATTRIBUTE] = id;
    return window.fetch(root + "cart/update.js", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify({ attributes: attributes }),
      credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (cart) {
      // The cart cookie names the cart from now on (the update may have just created it).
      lsSet(KEYS.shopifyCart, id + "|" + (readCookie("cart") || (cart && cart.token) || ""));
      return true;
    }).catch(function (error) {
      warn("could not add the anonymous id to the Shopify cart (" + error.message + ")");
      return false;
    });
  }

  // ------------------------------------------------------------------ the public calls
  var api = {
    VERSION: VERSION,
    config: config,
    anonymousId: anonymousId,
    user: function () { return { anonymousId: anonymousId(), userId: userId(), traits: traits() }; },
    flush: flush,
    tagShopifyCart: tagShopifyCart,

    page: function (name, properties) {
      if (name && typeof name === "object") { properties = name; name = undefined; }
      var props = pageContext();
      for (var key in (properties || {})) props[key] = properties[key];
      var fields = { properties: props };
      if (name) fields.name = String(name);
      return enqueue("page", fields);
    },

    track: function (event, properties) {
      if (!event) { warn("track needs an event name"); return Promise.resolve(); }
      return enqueue("track", { event: String(event), properties: properties || {} });
    },

    /** identify(userId?, traits?) — an email capture is identify(null, {email}). */
    identify: function (id, newTraits) {
      if (id && typeof id === "object") { newTraits = id; id = null; }
      if (id !== null && id !== undefined && id !== "") lsSet(KEYS.userId, String(id));
      var merged = traits();
      for (var key in (newTraits || {})) merged[key] = newTraits[key];
      lsSet(KEYS.traits, JSON.stringify(merged));
      return enqueue("identify", { traits: newTraits || {} });
    },

    /** Forget who this browser is: a new anonymous id, no user id or traits (a shared computer's log-out). */
    reset: function () {
      lsRemove(KEYS.userId);
      lsRemove(KEYS.traits);
      lsRemove(KEYS.anonymousId);
      writeCookie(config.cookieName, "", 0);
      var id = anonymousId();
      tagShopifyCart();
      return id;
    }
  };

  window.breadcrumb = api;
  anonymousId(); // settle the id (cookie + localStorage) before anything else runs
  if (readQueue().length) flush(); // what a previous page could not send
  tagShopifyCart();
  if (config.autoPage) api.page();
  try { document.dispatchEvent(new CustomEvent("breadcrumb:ready", { detail: api })); } catch (e) { /* IE */ }
})(window, document);
