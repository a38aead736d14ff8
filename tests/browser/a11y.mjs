// Accessibility and wording checks of a rendered admin page, shared by the browser
// scenarios (tests/browser/*.mjs).
//
// checkA11y(page, what) runs axe-core (npm, vendored by `npm ci`) in the page and
// throws on any serious or critical violation, naming the rule and the elements.
// axe is evaluated through the DevTools protocol, which the pages' Content-Security-
// Policy (no inline script) does not apply to, so the pages are checked with their real
// policy in force.
//
// checkNoCli(page, what) throws if the rendered text of the page gives command-line
// advice: a `--flag` or a backticked command.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export async function checkA11y(page, what) {
  const has = await page.evaluate(() => typeof window.axe !== 'undefined');
  if (!has) { await page.evaluate(axeSource); }
  // A check that never answers fails the scenario in a minute instead of hanging it.
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`axe on ${what}: no answer in 60 s`)), 60000);
  });
  const run = page.evaluate(async () => {
    const r = await window.axe.run(document, {
      resultTypes: ['violations'],
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
    });
    return r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')),
    }));
  });
  const result = await Promise.race([run, timeout]).finally(() => clearTimeout(timer));
  const bad = result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = result.filter((v) => !bad.includes(v));
  if (minor.length) {
    console.log(`axe on ${what}: ${minor.length} minor/moderate: ${minor.map((v) => v.id).join(', ')}`);
  }
  if (bad.length) {
    throw new Error(`axe on ${what}: ${bad.length} serious/critical violation(s):\n${bad
      .map((v) => `  ${v.impact} ${v.id}: ${v.help} at ${v.nodes.join(' | ')}`).join('\n')}`);
  }
  console.log(`axe on ${what}: no serious or critical violations`);
}

// A flag (`--approve-skipped`) or a backticked command in visible text.
const CLI = /(^|[\s(])--[a-z]|`/m;

export async function checkNoCli(page, what) {
  const text = await page.evaluate(() => document.body.innerText);
  const m = text.match(CLI);
  if (m) {
    const at = Math.max(0, m.index - 80);
    throw new Error(`${what} gives command-line advice: ...${text.slice(at, m.index + 80)}...`);
  }
}
