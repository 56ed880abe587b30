//! Configuration parsing: unknown keys and bad values are one-line errors naming the key.

use omnigate::config::Config;

#[test]
fn defaults_need_no_file() {
    let config = Config::from_toml_str("").expect("defaults");
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert!(config.database_url.is_sqlite());
    assert_eq!(config.platforms.meta.api_version, "v21.0");
    assert_eq!(config.ai.timeout_ms, 20_000);
}

#[test]
fn every_contract_key_is_accepted() {
    let toml = r#"
listen = "127.0.0.1:9000"
database_url = "postgres://u:secretpw@localhost/db"
public_url = "https://gw.example.com"
admin_token = "t"
master_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
[platforms.meta]
graph_url = "http://127.0.0.1:1"
api_version = "v22.0"
app_secret = "s"
verify_token = "v"
[platforms.slack]
api_url = "http://127.0.0.1:2"
signing_secret = "s"
client_id = "c"
client_secret = "cs"
[platforms.telegram]
api_url = "http://127.0.0.1:3"
[platforms.discord]
api_url = "http://127.0.0.1:4"
[ai]
providers = ["openai", "gemini"]
timeout_ms = 5000
[ai.openai]
base_url = "http://127.0.0.1:5"
api_key = "k"
model = "m"
[ai.anthropic]
base_url = "http://127.0.0.1:6"
[ai.gemini]
base_url = "http://127.0.0.1:7"
[knowledge]
allow_private_targets = true
"#;
    let config = Config::from_toml_str(toml).expect("contract config");
    assert_eq!(config.public_url(), "https://gw.example.com");
    assert!(config.database_url.is_postgres());
    // The password never shows in debug output.
    assert!(!format!("{config:?}").contains("secretpw"));
    assert!(!format!("{config:?}").contains("cs\""));
}

#[test]
fn unknown_keys_and_bad_values_name_the_key() {
    let cases = [
        ("lisen = \"x\"", "lisen"),
        (
            "[platforms.meta]\ngraph_ur = \"x\"",
            "platforms.meta.graph_ur",
        ),
        ("listen = \"not an address\"", "listen"),
        ("database_url = \"mysql://x\"", "database_url"),
        ("master_key = \"c2hvcnQ=\"", "master_key"),
        ("[ai]\nproviders = [\"openai\", \"llama\"]", "llama"),
        ("[ai]\ntimeout_ms = \"soon\"", "ai.timeout_ms"),
        (
            "[platforms.meta]\ngraph_url = \"not a url\"",
            "platforms.meta.graph_url",
        ),
    ];
    for (toml, key) in cases {
        let err = Config::from_toml_str(toml).expect_err(toml).to_string();
        assert!(err.contains(key), "`{toml}` gave `{err}`");
        assert!(!err.contains('\n'), "one line: {err}");
    }
}
