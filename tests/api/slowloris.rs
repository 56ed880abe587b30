//! Slow clients (slowloris): connections that trickle or stall their request head or
//! body do not keep normal deliveries from being answered, a stalled head is cut off
//! by the server, and a half-sent body is never stored.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const SLOW_HEADS: usize = 100;
const SLOW_BODIES: usize = 100;
const NORMAL: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_block_normal_ones() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = app.create_tenant("Slow").await;
    let channel = app
        .create_whatsapp(&tenant, "8001", Some("slow-secret"))
        .await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let path = format!("/webhooks/whatsapp/{channel}");

    // Connections that send part of a request head, then nothing.
    let mut heads = Vec::new();
    for i in 0..SLOW_HEADS {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let partial = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ");
        stream.write_all(partial.as_bytes()).await.expect("write");
        heads.push(stream);
    }
    // Connections that send a complete, signed head and a tenth of the body.
    let slow_body = wa_texts(
        "8001",
        &[("15550009999", "wamid.slow.body", "never finished")],
    );
    let signature = webhooks::meta::sign(b"slow-secret", slow_body.as_bytes());
    let mut bodies = Vec::new();
    for _ in 0..SLOW_BODIES {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\ncontent-type: application/json\r\nx-hub-signature-256: {signature}\r\ncontent-length: {}\r\n\r\n",
            slow_body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        stream
            .write_all(&slow_body.as_bytes()[..slow_body.len() / 10])
            .await
            .expect("write");
        bodies.push(stream);
    }

    // Normal deliveries, all at once, while the slow ones hold their connections.
    let mut normal = Vec::new();
    for i in 0..NORMAL {
        let (http, url, path) = (app.http.clone(), app.url.clone(), path.clone());
        normal.push(tokio::spawn(async move {
            let body = wa_texts(
                "8001",
                &[(
                    &format!("1555000{i:04}"),
                    &format!("wamid.normal.{i}"),
                    "hello",
                )],
            );
            let signature = webhooks::meta::sign(b"slow-secret", body.as_bytes());
            http.post(format!("{url}{path}"))
                .header("content-type", "application/json")
                .header("x-hub-signature-256", signature)
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for task in normal {
        assert_eq!(task.await.expect("join").expect("answered"), 200);
    }
    wait_until("every normal delivery stored", || async {
        app.all_messages(&tenant)
            .await
            .iter()
            .filter(|m| m["direction"] == "inbound")
            .count()
            == NORMAL
    })
    .await;

    // The server, not the client, ends a stalled head (hyper's header read timeout).
    let mut stalled = heads.pop().expect("a slow head");
    let mut buf = [0u8; 256];
    let ended = tokio::time::timeout(Duration::from_secs(60), stalled.read(&mut buf))
        .await
        .expect("the server closes a connection whose head never completes");
    if let Ok(n) = ended {
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    // No half-sent body became a message.
    drop(bodies);
    let inbound: Vec<_> = app
        .all_messages(&tenant)
        .await
        .into_iter()
        .filter(|m| m["direction"] == "inbound")
        .collect();
    assert_eq!(inbound.len(), NORMAL);
    assert!(inbound
        .iter()
        .all(|m| m["external_id"] != "wamid.slow.body"));
    drop(heads);
}
