// The operator console with the sandbox beside it: a customer writes on WhatsApp,
// the operator signs in, takes the conversation over, replies (the reply reaches the
// customer in the sandbox), releases it, then exports and erases the contact.
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';
import { ok } from './common.mjs';

const base = process.env.OG_BASE_URL;
const shots = process.env.OG_SCREENSHOTS;
const shot = (page, name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const browser = await chromium.launch({ executablePath: process.env.OG_CHROMIUM, args: ['--no-sandbox'] });
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, acceptDownloads: true });
  const sandbox = await context.newPage();
  await sandbox.goto(`${base}/sandbox`);
  await sandbox.getByLabel('Message as the customer').fill('When are you open?');
  await sandbox.getByRole('button', { name: 'Send' }).click();
  await sandbox.locator('#timeline .msg.business', { hasText: 'Monday to Friday' }).waitFor();
  const key = (await sandbox.locator('#demo-key').textContent()).trim();

  const console_ = await context.newPage();
  await console_.goto(`${base}/console`);
  await shot(console_, 'console-sign-in');
  // A wrong key is refused with a message.
  await console_.getByLabel('Tenant API key').fill('og_not-a-key');
  await console_.getByRole('button', { name: 'Sign in' }).click();
  await console_.getByRole('alert').filter({ hasText: 'not accepted' }).waitFor();
  // Keyboard only: type the key and press Enter.
  await console_.getByLabel('Tenant API key').fill(key);
  await console_.keyboard.press('Enter');
  await console_.getByRole('heading', { name: 'Conversations' }).waitFor();
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'og_console');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict') throw new Error('session cookie is not HttpOnly/SameSite=Strict');
  await shot(console_, 'console-conversations');

  await console_.getByRole('link', { name: /^Conversation / }).first().click();
  await console_.getByText('When are you open?').waitFor();
  await console_.getByText('Assistant (offline answerer)').first().waitFor();
  await console_.getByRole('button', { name: 'Take over' }).click();
  await console_.locator('#conversation-status', { hasText: 'human' }).waitFor();
  ok('taken over');

  const agentText = 'Hi, this is Sam from the shop: we open at 8 tomorrow.';
  await console_.getByLabel('Reply as an agent').fill(agentText);
  await console_.getByRole('button', { name: 'Send reply' }).click();
  await console_.locator('li.msg', { hasText: agentText }).getByText('Agent').waitFor();
  await shot(console_, 'console-conversation');

  // The agent's reply reaches the customer in the sandbox.
  await sandbox.bringToFront();
  const agentLine = sandbox.locator('#timeline .msg.business', { hasText: agentText });
  await agentLine.getByText('Agent (operator console)').waitFor();
  await shot(sandbox, 'sandbox-agent-reply');
  ok('agent reply reached the sandbox');

  await console_.bringToFront();
  await console_.getByRole('button', { name: 'Release to the assistant' }).click();
  await console_.getByRole('button', { name: 'Take over' }).waitFor();
  ok('released');

  for (const [link, heading, name] of [['Channels', 'Channels', 'console-channels'], ['Settings', 'Settings', 'console-settings'], ['Audit log', 'Audit log', 'console-audit']]) {
    await console_.getByRole('link', { name: link }).click();
    await console_.getByRole('heading', { name: heading }).waitFor();
    await shot(console_, name);
  }
  await console_.getByText('Chain verified').waitFor();
  await console_.getByRole('link', { name: 'Channels' }).click();
  await console_.getByText('/webhooks/whatsapp/').first().waitFor();

  // The contact: consent, export, erasure.
  await console_.getByRole('link', { name: 'Conversations' }).click();
  await console_.getByRole('link', { name: /^Conversation / }).first().click();
  await console_.getByRole('link', { name: 'view contact' }).click();
  await console_.getByRole('heading', { name: 'Contact' }).waitFor();
  await shot(console_, 'console-contact');
  const [download] = await Promise.all([
    console_.waitForEvent('download'),
    console_.getByRole('link', { name: /Export everything/ }).click(),
  ]);
  const exported = JSON.parse(await readFile(await download.path(), 'utf8'));
  const texts = JSON.stringify(exported.conversations);
  if (!texts.includes('When are you open?') || !texts.includes(agentText)) throw new Error('export lacks the conversation');
  ok('exported');

  // Erasure needs the confirmation box.
  await console_.getByRole('button', { name: 'Erase this contact' }).click();
  await console_.getByRole('heading', { name: 'Contact' }).waitFor();
  await console_.getByLabel(/I understand that erasing/).check();
  await console_.getByRole('button', { name: 'Erase this contact' }).click();
  await console_.getByRole('status').filter({ hasText: 'The contact was erased.' }).waitFor();
  await shot(console_, 'console-erased');
  ok('erased');
  console.log(JSON.stringify({ contact_id: exported.contact.id }));
} finally {
  await browser.close();
}
