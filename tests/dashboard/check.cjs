// Opens the dashboard in Chromium (driven by playwright-core) as an operator would,
// and checks what a person sees: every module and edge of the running shop, a call
// rate rising under load, a canary's weight. Prints what it saw as one JSON line.
//
// Environment: DASHBOARD (the page's URL), TOKEN (the admin token, given as the
// password the browser asks for), GATEWAY (where orders are placed), MODULES and
// EDGES (comma-separated, edges as "from->to" or "from->to@topic"), CANARY
// ("module=weight"), LOADED_EDGE (the edge whose rate must rise), ORDER (a request
// body), SCREENSHOT (where to keep a picture), CHROMIUM (the browser).
"use strict";
const { chromium } = require("playwright-core");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const list = (name) => env(name).split(",").filter(Boolean);

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const seen = {};
  try {
    const context = await browser.newContext({
      httpCredentials: { username: "operator", password: env("TOKEN") },
      viewport: { width: 1500, height: 1100 },
    });
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (error) => problems.push(String(error)));
    page.on("console", (message) => { if (message.type() === "error") problems.push(message.text()); });
    const answer = await page.goto(env("DASHBOARD"));
    seen.status = answer.status();

    // Every module, in its node's column.
    for (const module of list("MODULES")) {
      await page.waitForSelector(`g.module[data-module="${module}"]`, { timeout: 30000 });
    }
    seen.modules = await page.$$eval("g.module", (boxes) => boxes.map((box) => `${box.dataset.node}/${box.dataset.module}`));
    // Every edge: calls, and each event subscription by topic.
    for (const edge of list("EDGES")) {
      const [pair, topic] = edge.split("@");
      const selector = topic ? `g.edge[data-edge="${pair}"][data-topic="${topic}"]` : `g.edge[data-edge="${pair}"][data-kind="call"]`;
      await page.waitForSelector(selector, { timeout: 30000 });
    }
    seen.edges = await page.$$eval("g.edge", (edges) => edges.map((edge) => edge.dataset.edge + (edge.dataset.topic ? "@" + edge.dataset.topic : "")));
    // The canary's weight, on its module's box.
    const [canaryModule, weight] = env("CANARY").split("=");
    await page.waitForSelector(`g.module[data-module="${canaryModule}"][data-canary-weight="${weight}"]`, { timeout: 30000 });
    seen.canary = await page.$eval(`g.module[data-module="${canaryModule}"] .canary`, (text) => text.textContent);

    // A call rate, before and under load: orders placed as fast as they are served.
    const loaded = `g.edge[data-edge="${env("LOADED_EDGE")}"][data-kind="call"]`;
    const rateNow = () => page.$eval(loaded, (edge) => Number(edge.dataset.rate));
    seen.rate_before = await rateNow();
    let stop = false;
    let placed = 0;
    const load = (async () => {
      while (!stop) {
        const reply = await fetch(env("GATEWAY") + "/orders", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: env("ORDER"),
        });
        await reply.arrayBuffer();
        // Placed, or refused once the stock ran out: either way orders called inventory.
        if (reply.status !== 201 && reply.status !== 409) throw new Error(`an order got ${reply.status}`);
        placed += 1;
      }
    })();
    try {
      await page.waitForFunction(
        ([selector, above]) => Number(document.querySelector(selector)?.dataset.rate) > above,
        [loaded, seen.rate_before + 0.5],
        { timeout: 60000, polling: 250 },
      );
      seen.rate_during = await rateNow();
      seen.edge_label = await page.$eval(`${loaded} text.label`, (text) => text.textContent);
      seen.route_rate = await page.$eval('tr.route[data-route="/orders"]', (row) => Number(row.dataset.rate));
      await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });
    } finally {
      stop = true;
      await load;
    }
    seen.placed = placed;
    seen.polls = Number(await page.$eval("#updated", (el) => el.dataset.polls));
    seen.error_banner = await page.$eval("#error", (el) => el.textContent);
    seen.problems = problems;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
