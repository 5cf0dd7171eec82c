//! API keys: bad configuration stops start-up without revealing a key,
//! keys come from a file or the environment, and reloads (`SIGHUP`) put a
//! new keys file in force or change nothing.

use std::time::Duration;

use opd::{Application, Config};
use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn bad_key_configuration_stops_start_up_without_revealing_keys() {
    let mut config = Config::for_tests();
    config.api_keys = Some("desk front-desk tooshort-key".parse().unwrap());
    let message = Application::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("shorter than 16"), "{message}");
    assert!(!message.contains("tooshort-key"), "{message}");

    let mut config = Config::for_tests();
    config.api_keys_file = Some("/nonexistent/api-keys".into());
    let message = Application::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("/nonexistent/api-keys"), "{message}");
}

#[tokio::test]
async fn a_key_that_no_header_can_carry_stops_start_up() {
    let mut config = Config::for_tests();
    config.api_keys = Some("desk front-desk clé-0123456789abcdef".parse().unwrap());
    let message = Application::build(config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(message.contains("not visible ASCII"), "{message}");
    assert!(!message.contains("0123456789abcdef"), "{message}");
}

#[tokio::test]
async fn a_reload_refuses_a_key_that_no_header_can_carry() {
    let path = keys_file(&format!("desk-1 front-desk {DESK_KEY}\n"));
    let mut config = Config::for_tests();
    config.api_keys_file = Some(path.clone());
    let app = spawn_app(config).await;
    std::fs::write(
        &path,
        format!("watcher viewer {VIEWER_KEY}\nnurse viewer clé-0123456789abcdef\n"),
    )
    .unwrap();
    let message = app.security.reload_keys().unwrap_err().to_string();
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("not visible ASCII"), "{message}");
    assert_eq!(slots_status(&app, DESK_KEY).await, StatusCode::OK);
    assert_eq!(
        slots_status(&app, VIEWER_KEY).await,
        StatusCode::UNAUTHORIZED
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn help_does_not_show_the_database_password() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_opd-token-engine"))
        .arg("--help")
        .env("DATABASE_URL", "postgres://u:secret@h/db")
        .env("OPD_API_KEYS", format!("desk front-desk {DESK_KEY}"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("secret"), "{help}");
    assert!(!help.contains(DESK_KEY), "{help}");

    // Nor does a start-up that the URL makes fail, even at the most
    // detailed log level.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_opd-token-engine"))
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            "postgres://u:secret@127.0.0.1/db?sslmode=bogus",
        )
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    assert!(logs.contains("PostgreSQL"), "{logs}");
    assert!(!logs.contains("secret"), "{logs}");
}

#[test]
fn the_example_key_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/api-keys.example");
    let text = std::fs::read_to_string(path).unwrap();
    let keys = opd::http::auth::parse_keys(&text, '\n', path).unwrap();
    assert_eq!(keys.len(), 5);
}

#[tokio::test]
async fn keys_from_a_file_work_like_keys_from_the_environment() {
    let path = keys_file(&format!(
        "# name role key\nfile-desk front-desk {DESK_KEY}\n\n"
    ));
    let directory = path.parent().unwrap().to_owned();
    let mut config = Config::for_tests();
    config.api_keys_file = Some(path);
    let app = spawn_app(config).await;
    let response = app.send(Method::GET, "/slots", Some(DESK_KEY), None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.send(Method::GET, "/slots", Some(ADMIN_KEY), None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    std::fs::remove_dir_all(directory).unwrap();
}

/// A keys file holding `lines`, in a directory of its own.
fn keys_file(lines: &str) -> std::path::PathBuf {
    let directory =
        std::env::temp_dir().join(format!("opd-security-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("api-keys");
    std::fs::write(&path, lines).unwrap();
    path
}

#[tokio::test]
async fn a_reload_puts_the_keys_file_in_force_and_a_bad_file_changes_nothing() {
    let path = keys_file(&format!("desk-1 front-desk {DESK_KEY}\n"));
    let mut config = Config::for_tests();
    config.api_keys_file = Some(path.clone());
    let app = spawn_app(config).await;
    let security = &app.security;
    assert_eq!(slots_status(&app, DESK_KEY).await, StatusCode::OK);
    assert_eq!(
        slots_status(&app, VIEWER_KEY).await,
        StatusCode::UNAUTHORIZED
    );

    // The desk key is withdrawn and a viewer key added.
    std::fs::write(&path, format!("watcher viewer {VIEWER_KEY}\n")).unwrap();
    assert_eq!(security.reload_keys().unwrap(), 1);
    assert_eq!(slots_status(&app, DESK_KEY).await, StatusCode::UNAUTHORIZED);
    assert_eq!(slots_status(&app, VIEWER_KEY).await, StatusCode::OK);

    // An invalid line, repeated keys, an empty file or a missing file are
    // refused, and the viewer key stays in force each time.
    for bad in [
        "watcher viewer\n".to_owned(),
        format!("a viewer {VIEWER_KEY}\nb viewer {VIEWER_KEY}\n"),
        "# no keys left\n".to_owned(),
    ] {
        std::fs::write(&path, bad).unwrap();
        assert!(security.reload_keys().is_err());
        assert_eq!(slots_status(&app, VIEWER_KEY).await, StatusCode::OK);
    }
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    assert!(security.reload_keys().is_err());
    assert_eq!(slots_status(&app, VIEWER_KEY).await, StatusCode::OK);
}

#[tokio::test]
async fn an_open_server_or_inline_keys_alone_cannot_be_reloaded() {
    let open = Application::build(Config::for_tests()).await.unwrap();
    assert!(open.security().reload_keys().is_err());
    let inline = Application::build(keyed_config()).await.unwrap();
    assert!(inline.security().reload_keys().is_err());
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_keys_file() {
    use tokio::signal::unix::{signal, SignalKind};
    // Installs this process's SIGHUP handler before any SIGHUP is sent,
    // so the signal cannot end the test process.
    let _hangups = signal(SignalKind::hangup()).unwrap();
    let path = keys_file(&format!("desk-1 front-desk {DESK_KEY}\n"));
    let mut config = Config::for_tests();
    config.api_keys_file = Some(path.clone());
    let app = spawn_app(config).await;
    tokio::spawn(opd::reload_on_hangup(app.reload.clone()));
    std::fs::write(&path, format!("watcher viewer {VIEWER_KEY}\n")).unwrap();
    // The listener task may not have started yet: signal until it has.
    let mut reloaded = false;
    for _ in 0..100 {
        // SAFETY: kill only sends a signal, here to this process.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if slots_status(&app, VIEWER_KEY).await == StatusCode::OK {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "SIGHUP did not reload the keys file");
    assert_eq!(slots_status(&app, DESK_KEY).await, StatusCode::UNAUTHORIZED);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
