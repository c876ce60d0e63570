//! The README's test command is `scripts/test.sh`, which prepares the services and then runs
//! `cargo test --workspace`; CI (`.ci/run`) runs the same script.
use std::path::Path;
use std::process::Command;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn the_readme_test_command_is_the_script_ci_runs() {
    let readme = read("README.md");
    assert!(
        readme.lines().any(|l| l.trim() == "scripts/test.sh"),
        "README names scripts/test.sh as the test command"
    );
    assert!(
        readme.lines().any(|l| l.trim() == "cargo test --workspace"),
        "README keeps cargo test --workspace for machines with the services"
    );
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "scripts/test.sh"),
        ".ci/run runs scripts/test.sh"
    );
    let script = read("scripts/test.sh");
    for needed in [
        "pg_ctlcluster --skip-systemctl-redirect",
        "rabbitmq-server -detached",
        "chromium-driver",
        "docker-compose",
        "cargo test --workspace",
    ] {
        assert!(script.contains(needed), "scripts/test.sh: {needed}");
    }
    let root = env!("CARGO_MANIFEST_DIR");
    for f in ["scripts/test.sh", ".ci/run"] {
        let path = Path::new(root).join(f);
        let ok = Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("bash");
        assert!(ok.success(), "{f} parses");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert!(mode & 0o111 != 0, "{f} is executable");
        }
    }
}
