//! The `/sandbox` page: one tab per platform, a customer's compose box, and the
//! timeline of what went in and what the platform's fake API received.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Html;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{Platform, Sandbox};

pub async fn page(State(sandbox): State<Arc<Sandbox>>) -> Html<String> {
    Html(render(&sandbox).into_string())
}

fn render(sandbox: &Sandbox) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "omnigate sandbox" }
                style { (PreEscaped(crate::web::STYLE)) }
            }
            body {
                header {
                    h1 { "omnigate sandbox" }
                    p {
                        "Write as a customer of " strong { "Demo Coffee Roasters" }
                        " on any platform. Your message is sent to the gateway as that platform's signed webhook; "
                        "the reply reaches the platform's stand-in API and appears here."
                    }
                }
                main {
                    div role="tablist" aria-label="Platform" id="tabs" {
                        @for (i, platform) in Platform::ALL.iter().enumerate() {
                            button role="tab" type="button" id={ "tab-" (platform.name()) }
                                data-platform=(platform.name())
                                aria-selected=(if i == 0 { "true" } else { "false" })
                                aria-controls="timeline" { (platform.label()) }
                        }
                    }
                    section id="timeline" role="tabpanel" aria-live="polite" aria-label="Conversation" {}
                    form id="compose" {
                        label for="text" { "Message as the customer" }
                        div.row {
                            input id="text" name="text" type="text" autocomplete="off" required
                                placeholder="e.g. When are you open?";
                            button type="submit" { "Send" }
                        }
                        p id="error" role="alert" {}
                    }
                    section.demo aria-label="Operator console" {
                        h2 { "See it as the business" }
                        p {
                            "Sign in to the " a href="/console" { "operator console" }
                            " with the demo tenant's API key:"
                        }
                        code id="demo-key" { (sandbox.demo.api_key) }
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

const SCRIPT: &str = r#"
let current = document.querySelector('[role=tab][aria-selected=true]').dataset.platform;
const tabs = [...document.querySelectorAll('[role=tab]')];
function select(tab) {
  tabs.forEach(t => { t.setAttribute('aria-selected', t === tab ? 'true' : 'false'); t.tabIndex = t === tab ? 0 : -1; });
  current = tab.dataset.platform; refresh();
}
tabs.forEach((tab, i) => {
  tab.tabIndex = tab.getAttribute('aria-selected') === 'true' ? 0 : -1;
  tab.addEventListener('click', () => select(tab));
  tab.addEventListener('keydown', e => {
    const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (d) { const next = tabs[(i + d + tabs.length) % tabs.length]; next.focus(); select(next); }
  });
});
function who(e) {
  if (e.side === 'customer') return 'You (customer)';
  if (e.author === 'agent') return 'Agent (operator console)';
  if (e.author === 'system') return 'System notice';
  if (e.produced_by === 'kb') return 'Assistant: offline answerer (knowledge base)';
  if (e.produced_by) return 'Assistant: provider ' + e.produced_by;
  return 'Business';
}
function line(e) {
  const li = document.createElement('li');
  li.className = 'msg ' + e.side;
  const by = document.createElement('span'); by.className = 'by'; by.textContent = who(e);
  const text = document.createElement('p'); text.className = 'text'; text.textContent = e.text;
  li.append(by, text);
  const meta = document.createElement('span'); meta.className = 'meta';
  if (e.side === 'customer') meta.textContent = e.webhook_status === 200 ? 'webhook accepted' : 'webhook answered ' + e.webhook_status;
  else meta.textContent = e.status ? 'status: ' + e.status : 'received by the platform';
  li.append(meta);
  return li;
}
let last = '';
async function refresh() {
  try {
    const r = await fetch('/sandbox/feed');
    const body = await r.json();
    const mine = body.entries.filter(e => e.platform === current);
    const key = current + JSON.stringify(mine);
    if (key === last) return;
    last = key;
    const ol = document.createElement('ol');
    mine.forEach(e => ol.append(line(e)));
    const tl = document.getElementById('timeline');
    tl.replaceChildren(ol);
    tl.scrollTop = tl.scrollHeight;
  } catch (_) {}
}
document.getElementById('compose').addEventListener('submit', async e => {
  e.preventDefault();
  const input = document.getElementById('text');
  const error = document.getElementById('error');
  error.textContent = '';
  const r = await fetch('/sandbox/send', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({platform: current, text: input.value})});
  if (!r.ok) { error.textContent = 'Not sent: ' + r.status; return; }
  input.value = '';
  refresh();
});
setInterval(refresh, 1000);
refresh();
"#;
