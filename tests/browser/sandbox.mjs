// The sandbox as a newcomer uses it, on a phone-sized screen: pick a platform tab,
// write as the customer, see the reply and who answered it.
import { chromium } from 'playwright-core';
import { ok, check } from './common.mjs';

const base = process.env.OG_BASE_URL;
const shots = process.env.OG_SCREENSHOTS;
const browser = await chromium.launch({ executablePath: process.env.OG_CHROMIUM, args: ['--no-sandbox'] });
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  await page.goto(`${base}/sandbox`);

  // Keyboard: the arrow keys move between the platform tabs.
  await page.getByRole('tab', { name: 'WhatsApp' }).focus();
  await page.keyboard.press('ArrowRight');
  await check(page.getByRole('tab', { name: 'Messenger' }), 'aria-selected', 'true');

  const cases = [
    ['WhatsApp', 'When are you open?', 'Monday to Friday', true],
    ['Slack', 'How much does shipping cost?', 'orders over 30 euros', false],
  ];
  for (const [tab, text, expected, receipts] of cases) {
    await page.getByRole('tab', { name: tab }).click();
    await page.getByLabel('Message as the customer').fill(text);
    await page.getByRole('button', { name: 'Send' }).click();
    await page.locator('#timeline .msg.customer', { hasText: text }).waitFor();
    const reply = page.locator('#timeline .msg.business', { hasText: expected });
    await reply.waitFor();
    await reply.getByText('offline answerer').waitFor();
    if (receipts) await reply.getByText('status: read').waitFor();
    ok(`${tab}: reply shown`);
    await page.screenshot({ path: `${shots}/sandbox-${tab.toLowerCase()}.png`, fullPage: true });
  }
} finally {
  await browser.close();
}
