// Small helpers shared by the browser scripts.
export function ok(what) {
  console.log(`ok: ${what}`);
}

// Waits (bounded) until `locator`'s attribute has `value`.
export async function check(locator, attribute, value) {
  for (let i = 0; i < 100; i++) {
    if ((await locator.getAttribute(attribute)) === value) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${attribute} never became ${value}`);
}
