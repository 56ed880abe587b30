//! What the sandbox page and the operator console share: the style sheet.

/// Small, readable, phone-first styles (no external assets).
pub const STYLE: &str = r#"
*{box-sizing:border-box}
body{font:16px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header,main,nav{max-width:60rem;margin:0 auto;padding:.75rem 1rem}
header h1{font-size:1.4rem;margin:.25rem 0}
h2{font-size:1.15rem}
a{color:#0b57d0}
nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem;border-bottom:1px solid #d0d4da}
button,input,select,textarea{font:inherit}
button{padding:.5rem .9rem;border:1px solid #0b57d0;background:#0b57d0;color:#fff;border-radius:.4rem;cursor:pointer}
button.secondary{background:#fff;color:#0b57d0}
button.danger{background:#b3261e;border-color:#b3261e}
button:focus-visible,a:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible{outline:3px solid #f29900;outline-offset:2px}
input,select,textarea{padding:.5rem;border:1px solid #8a929c;border-radius:.4rem;width:100%}
label{display:block;font-weight:600;margin:.5rem 0 .25rem}
[role=tablist]{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0}
[role=tab]{background:#fff;color:#0b57d0}
[role=tab][aria-selected=true]{background:#0b57d0;color:#fff}
#timeline{background:#fff;border:1px solid #d0d4da;border-radius:.5rem;min-height:14rem;max-height:60vh;overflow:auto;padding:.5rem}
ol{list-style:none;margin:0;padding:0}
.msg{margin:.4rem 0;padding:.5rem .7rem;border-radius:.6rem;max-width:85%}
.msg.customer,.msg.inbound{background:#e8f0fe;margin-right:auto}
.msg.business,.msg.outbound{background:#e6f4ea;margin-left:auto}
.msg .by,.msg .meta{display:block;font-size:.8rem;color:#4a5360}
.msg .text{margin:.15rem 0;white-space:pre-wrap;overflow-wrap:anywhere}
.row{display:flex;gap:.5rem}
.row input{flex:1}
#error,.error{color:#b3261e}
.notice{background:#e6f4ea;padding:.5rem;border-radius:.4rem}
code{overflow-wrap:anywhere;background:#eef0f3;padding:.1rem .3rem;border-radius:.25rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.4rem;border-bottom:1px solid #e2e5e9;vertical-align:top;overflow-wrap:anywhere}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin:.5rem 0}
.actions form{margin:0}
@media (max-width:40rem){.msg{max-width:100%}table,thead,tbody,tr,th,td{display:block}thead{display:none}td{border:0;padding:.15rem .4rem}tr{border-bottom:1px solid #e2e5e9;padding:.4rem 0}}
"#;

/// This process's own base URL on loopback (the sandbox posts its webhooks there).
pub fn self_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}
