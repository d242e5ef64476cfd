/* The demo store's own behaviour: cart, quiz, checkout and the email modal, tracked through breadcrumb.js. */
(function (window, document) {
  "use strict";
  var bc = window.breadcrumb;
  var CART_KEY = "fernfield.cart";
  var VIEWS_KEY = "fernfield.views";
  var OFFER_KEY = "fernfield.offer";

  function $(id) { return document.getElementById(id); }
  function data(id) {
    var node = $(id);
    try { return node ? JSON.parse(node.textContent) : null; } catch (e) { return null; }
  }
  function money(value) { return "$" + Number(value || 0).toFixed(2); }
  function uuid() {
    if (window.crypto && window.crypto.randomUUID) return window.crypto.randomUUID();
    return Date.now().toString(16) + Math.random().toString(16).slice(2);
  }

  function readCart() {
    try {
      var cart = JSON.parse(window.localStorage.getItem(CART_KEY) || "null");
      if (cart && cart.cart_id && Array.isArray(cart.items)) return cart;
    } catch (e) { /* corrupt: start over */ }
    return { cart_id: "cart-" + uuid().slice(0, 13), items: [] };
  }
  function writeCart(cart) { window.localStorage.setItem(CART_KEY, JSON.stringify(cart)); showCount(cart); }
  function cartValue(cart) {
    return Math.round(cart.items.reduce(function (sum, i) { return sum + i.price * i.quantity; }, 0) * 100) / 100;
  }
  function showCount(cart) {
    var count = cart.items.reduce(function (n, i) { return n + i.quantity; }, 0);
    if ($("cart-count")) $("cart-count").textContent = String(count);
  }
  function toast(text) {
    var node = $("toast");
    if (!node) return;
    node.textContent = text;
    node.hidden = false;
    window.clearTimeout(toast.timer);
    toast.timer = window.setTimeout(function () { node.hidden = true; }, 2500);
  }

  // ------------------------------------------------------------------ every page
  if ($("anon-id")) $("anon-id").textContent = bc.anonymousId();
  showCount(readCart());

  // ------------------------------------------------------------------ the email modal
  var modal = $("email-modal");
  function openModal() { if (modal) { modal.hidden = false; $("email-input").focus(); } }
  function closeModal() { if (modal) modal.hidden = true; }
  if ($("offer-button")) $("offer-button").addEventListener("click", openModal);
  if ($("email-close")) $("email-close").addEventListener("click", function () {
    closeModal();
    window.localStorage.setItem(OFFER_KEY, "dismissed");
  });
  if ($("email-form")) $("email-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var email = $("email-input").value.trim();
    if (!email) return;
    // An email capture is a full identify: everything this browser did so far joins the person.
    bc.identify({ email: email });
    bc.track("Email Captured", { source: "modal", offer: "FERN10", page: window.location.pathname });
    window.localStorage.setItem(OFFER_KEY, "captured");
    $("email-submit").disabled = true;
    $("email-thanks").hidden = false;
    bc.flush().then(function () { document.body.setAttribute("data-email-captured", "true"); });
  });
  // Like most shops: offer the discount on the third page a visitor sees, once.
  var views = Number(window.sessionStorage.getItem(VIEWS_KEY) || "0") + 1;
  window.sessionStorage.setItem(VIEWS_KEY, String(views));
  if (views === 3 && !window.localStorage.getItem(OFFER_KEY)) window.setTimeout(openModal, 400);

  // ------------------------------------------------------------------ pages
  var page = document.body.getAttribute("data-page");

  if (page === "collection") {
    var list = data("collection-data");
    if (list) bc.track("Collection Viewed", list);
  }

  if (page === "product") {
    var product = data("product-data");
    if (product) {
      product.url = window.location.pathname;
      bc.track("Product Viewed", product);
      $("add-to-cart").addEventListener("click", function () {
        var cart = readCart();
        var held = cart.items.filter(function (i) { return i.sku === product.sku; })[0];
        if (held) held.quantity += 1;
        else cart.items.push({ sku: product.sku, name: product.name, price: product.price, category: product.category,
                               currency: product.currency, quantity: 1 });
        writeCart(cart);
        bc.track("Added to Cart", {
          cart_id: cart.cart_id, sku: product.sku, product_id: product.sku, name: product.name, price: product.price,
          quantity: 1, category: product.category, currency: product.currency, url: product.url,
          value: cartValue(cart)
        }).then(function () { document.body.setAttribute("data-added", String(Number(document.body.getAttribute("data-added") || 0) + 1)); });
        toast(product.name + " added to your cart");
      });
      $("size-guide").addEventListener("click", function () {
        $("how-to").hidden = false;
        bc.track("Size Guide Viewed", { sku: product.sku, name: product.name, category: product.category });
      });
    }
  }

  if (page === "quiz") {
    var quiz = data("quiz-data");
    document.querySelectorAll("#quiz input[type=radio]").forEach(function (input) {
      input.addEventListener("change", function () {
        var question = input.closest("fieldset").getAttribute("data-question");
        bc.track("Quiz Answered", { quiz: quiz.quiz, question: question, answer: input.value,
                                    category: quiz.categories[input.value] });
        var pick = quiz.picks[input.value];
        if (pick) {
          $("quiz-pick").textContent = pick.name;
          $("quiz-pick").href = window.location.pathname.replace(/\/quiz$/, "/products/" + pick.sku) + window.location.search;
          $("quiz-result").hidden = false;
        }
      });
    });
  }

  if (page === "cart") {
    var catalog = data("catalog-data") || {};
    var renderCart = function () {
      var cart = readCart();
      var box = $("cart-items");
      if (!cart.items.length) {
        box.innerHTML = "<p>Your cart is empty.</p>";
        $("checkout-form").hidden = true;
      } else {
        box.innerHTML = "";
        cart.items.forEach(function (item) {
          var row = document.createElement("p");
          row.className = "line";
          row.textContent = item.quantity + " × " + item.name + " — " + money(item.price * item.quantity);
          box.appendChild(row);
        });
        $("checkout-form").hidden = false;
      }
      $("cart-total").textContent = money(cartValue(cart));
    };
    var products = function (cart) {
      return cart.items.map(function (i) {
        var known = catalog[i.sku] || {};
        return { sku: i.sku, product_id: i.sku, name: i.name, price: i.price, quantity: i.quantity,
                 category: i.category || known.category, url: known.url };
      });
    };
    renderCart();
    $("checkout-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var cart = readCart();
      var email = $("checkout-email").value.trim();
      // A checkout email identifies this browser on the server (identify_events), no identify call needed.
      bc.track("Checkout Started", { cart_id: cart.cart_id, value: cartValue(cart), revenue: cartValue(cart),
                                     currency: "USD", products: products(cart), email: email });
      $("checkout-form").hidden = true;
      $("payment").hidden = false;
    });
    $("pay-now").addEventListener("click", function () {
      var cart = readCart();
      var orderId = "order-" + uuid().slice(0, 8);
      bc.track("Order Completed", { order_id: orderId, cart_id: cart.cart_id, value: cartValue(cart),
                                    revenue: cartValue(cart), currency: "USD", products: products(cart) });
      window.localStorage.removeItem(CART_KEY);
      showCount(readCart());
      $("payment").hidden = true;
      $("order-id").textContent = orderId;
      $("order-done").hidden = false;
      $("cart-items").innerHTML = "";
      $("cart-total").textContent = money(0);
    });
  }
})(window, document);
