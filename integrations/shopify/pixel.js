/*!
 * Breadcrumb custom web pixel for Shopify — paste into Settings → Customer events → Add custom pixel.
 *
 * Set the two values below: your Breadcrumb API's public URL and a *browser* (public) write key.
 * Shopify's standard customer events become Segment-shaped /v1 calls in Breadcrumb's event taxonomy,
 * with Shopify's `clientId` as the anonymous id and the checkout token on checkout events, so the
 * checkouts/orders webhooks find this device. Each call's messageId is Shopify's event id: a resend
 * is stored once. A failed call is dropped quietly — a pixel must never disturb the shop.
 */
const BREADCRUMB = {
  apiUrl: "https://breadcrumb.example.com",
  writeKey: "wk_your_browser_key",
};

const LIBRARY = { name: "breadcrumb-shopify-pixel", version: "1.0.0" };

function send(path, message) {
  const body = JSON.stringify({ ...message, writeKey: BREADCRUMB.writeKey, sentAt: new Date().toISOString() });
  return fetch(BREADCRUMB.apiUrl.replace(/\/+$/, "") + "/v1/" + path, {
    method: "POST",
    headers: { "Content-Type": "text/plain" }, // a "simple" CORS request: no preflight
    body,
    keepalive: true,
    credentials: "omit",
  }).catch(() => undefined);
}

/** The page the event happened on (Shopify's snapshot of the top frame). */
function page(event) {
  const doc = (event.context && event.context.document) || {};
  const location = doc.location || {};
  return { url: location.href, path: location.pathname, search: location.search, referrer: doc.referrer, title: doc.title };
}

function base(event) {
  const nav = (event.context && event.context.navigator) || {};
  return {
    anonymousId: event.clientId,
    messageId: event.id,
    timestamp: event.timestamp,
    context: { library: LIBRARY, page: page(event), userAgent: nav.userAgent, locale: nav.language },
  };
}

function amount(money) {
  if (!money || money.amount === undefined || money.amount === null) return undefined;
  const value = Number(money.amount);
  return Number.isFinite(value) ? value : undefined;
}

function absolute(event, url) {
  if (!url) return undefined;
  try { return new URL(url, page(event).url).href; } catch (e) { return undefined; }
}

/** Shopify's numeric id: "123" and "gid://shopify/ProductVariant/123" give "123". */
function shopifyId(value) {
  if (value === undefined || value === null || value === "") return undefined;
  return String(value).split("/").pop();
}

/**
 * A ProductVariant as the taxonomy's product properties, keyed like the catalogue the product
 * webhooks fill: `sku` = the product's id, `variant` = the variant's id (its own SKU is `product_sku`).
 */
function product(event, variant) {
  if (!variant) return {};
  const item = variant.product || {};
  const named = variant.title && variant.title !== "Default Title";
  return {
    sku: shopifyId(item.id) || shopifyId(variant.id),
    variant: shopifyId(variant.id),
    product_sku: variant.sku || undefined,
    name: named ? item.title + " – " + variant.title : item.title,
    variant_title: named ? variant.title : undefined,
    brand: item.vendor || undefined,
    category: item.type || undefined,
    price: amount(variant.price),
    currency: variant.price ? variant.price.currencyCode : undefined,
    url: absolute(event, item.url),
    image_url: variant.image ? absolute(event, variant.image.src) : undefined,
  };
}

/**
 * Shopify's cart cookie holds the cart token that checkouts and orders carry as `cart_token`
 * (newer carts append "?key=…" to it, which the webhooks never show).
 */
async function cartToken() {
  try {
    const cookie = decodeURIComponent((await browser.cookie.get("cart")) || "");
    return cookie.split("?")[0] || undefined;
  } catch (e) {
    return undefined;
  }
}

async function checkoutProperties(event) {
  const checkout = event.data.checkout || {};
  const lines = checkout.lineItems || [];
  return {
    cart_id: (await cartToken()) || checkout.token,
    checkout_token: checkout.token,
    value: amount(checkout.totalPrice) ?? amount(checkout.subtotalPrice),
    currency: checkout.currencyCode,
    email: checkout.email || undefined,
    phone: checkout.phone || undefined,
    products: lines.map((line) => ({ ...product(event, line.variant), quantity: line.quantity })),
  };
}

function track(event, name, properties) {
  return send("track", { ...base(event), event: name, properties });
}

const HANDLERS = {
  page_viewed: (event) => send("page", { ...base(event), name: page(event).title, properties: page(event) }),

  product_viewed: (event) =>
    track(event, "Product Viewed", product(event, event.data.productVariant)),

  collection_viewed: (event) => {
    const collection = event.data.collection || {};
    return track(event, "Collection Viewed", {
      category: collection.title,
      collection_id: collection.id,
      url: page(event).url,
      products: (collection.productVariants || []).slice(0, 20).map((variant) => product(event, variant)),
    });
  },

  search_submitted: (event) => {
    const result = event.data.searchResult || {};
    return track(event, "Products Searched", { query: result.query, url: page(event).url });
  },

  product_added_to_cart: async (event) => {
    const line = event.data.cartLine || {};
    return track(event, "Added to Cart", {
      ...product(event, line.merchandise),
      quantity: line.quantity,
      value: line.cost ? amount(line.cost.totalAmount) : undefined,
      cart_id: await cartToken(),
    });
  },

  checkout_started: async (event) => track(event, "Checkout Started", await checkoutProperties(event)),

  /** The shopper typed an email or phone: this device becomes that person, then the checkout joins them. */
  checkout_contact_info_submitted: async (event) => {
    const properties = await checkoutProperties(event);
    if (properties.email || properties.phone) {
      await send("identify", {
        ...base(event),
        messageId: event.id + ":identify",
        traits: { email: properties.email, phone: properties.phone },
      });
    }
    return track(event, "Checkout Started", properties);
  },
};

Object.keys(HANDLERS).forEach((name) => {
  analytics.subscribe(name, (event) => {
    try {
      return Promise.resolve(HANDLERS[name](event)).catch(() => undefined);
    } catch (e) {
      return undefined; // an unexpected event shape: skip it, never throw into Shopify's sandbox
    }
  });
});
