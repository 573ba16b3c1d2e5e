//! `wasi:config` through real modules (`modules/testing/configprobe`): each module reads
//! its own values from the deployment file and its secrets from the host's
//! environment, and a secret's value appears nowhere the host writes.

mod common;

use common::*;
use serde_json::json;

const SECRET: &str = "sk_test_e2e-0b5e7d1c";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_module_reads_its_own_configuration_and_secrets_stay_unsaid() {
    let deployment = TestDeployment::new(
        r#"
[app]
name = "config"

[modules.a]
component = "{configprobe}"
routes = ["/a"]
config = { currency = "EUR", limit = 500000, live = false, key = { env = "MODHOST_E2E_PROCESSOR_KEY" }, mode = { env = "MODHOST_E2E_UNSET_MODE", default = "sandbox" } }

[modules.b]
component = "{configprobe}"
routes = ["/b"]
config = { currency = "GBP" }
"#,
    );
    let host = Modhost::start_with_env(
        &deployment,
        "run",
        &[],
        &[("MODHOST_E2E_PROCESSOR_KEY", SECRET)],
    );
    let a = get(&host.url("/a/config")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.json()["values"],
        json!({ "currency": "EUR", "limit": "500000", "live": "false", "key": SECRET, "mode": "sandbox" })
    );
    assert_eq!(
        get(&host.url("/a/config/currency")).await.json(),
        json!({ "value": "EUR" })
    );
    assert_eq!(
        get(&host.url("/a/config/absent")).await.json(),
        json!({ "value": null })
    );
    // Module b sees its own configuration only.
    assert_eq!(
        get(&host.url("/b/config")).await.json()["values"],
        json!({ "currency": "GBP" })
    );

    // The host names the secrets it read, never their values.
    host.wait_for_log_with(&["configuration ready", "key"]);
    let readiness = get(&host.url("/readyz")).await.text();
    let metrics = get(&host.url("/metrics")).await.text();
    let logs = host.logs().join("\n");
    for (place, text) in [
        ("the log", &logs),
        ("/readyz", &readiness),
        ("/metrics", &metrics),
    ] {
        assert!(!text.contains(SECRET), "the secret's value is in {place}");
    }
}

#[test]
fn a_secret_missing_from_the_environment_stops_the_deployment_before_it_serves() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"config\"\n[modules.a]\ncomponent = \"{configprobe}\"\nroutes = [\"/a\"]\n\
         config = { key = { env = \"MODHOST_E2E_NEVER_SET\" } }\n",
    );
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("deployment.toml:6: modules.a.config.key"),
        "{stderr}"
    );
    assert!(
        stderr.contains("MODHOST_E2E_NEVER_SET is not set"),
        "{stderr}"
    );
}

#[test]
fn a_module_that_imports_config_without_any_is_refused() {
    let deployment = TestDeployment::new(
        "[app]\nname = \"config\"\n[modules.a]\ncomponent = \"{configprobe}\"\nroutes = [\"/a\"]\n",
    );
    let (code, stderr) = check(&deployment);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("imports wasi:config/store@0.2.0-rc.1 but the module has no configuration"),
        "{stderr}"
    );
}
