//! `systemd-analyze verify` accepts packaging/ringlan@.service without any
//! warning (ExecStart pointed at the binary just built).

use std::path::Path;
use std::process::Command;

#[test]
fn unit_file_verifies_cleanly() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/ringlan@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/ringlan up -c /etc/ringlan/%i.yaml"));
    assert!(
        text.contains("ExecStartPost=-+/usr/bin/ringlan resolved-setup -c /etc/ringlan/%i.yaml")
    );
    assert!(text.contains("Type=notify"));
    let text = text.replace("/usr/bin/ringlan", env!("CARGO_BIN_EXE_ringlan"));

    let dir = std::env::temp_dir().join(format!("ringlan-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ringlan@.service"), text).unwrap();
    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("ringlan@home.service"))
        .current_dir(&dir)
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("cannot run systemd-analyze ({e}): install the `systemd` package (apt-get install systemd)");
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only lines about our unit count; systemd may also grumble about the
    // host's own units.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("ringlan")).collect();
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        ours.is_empty(),
        "warnings about the unit:\n{}",
        ours.join("\n")
    );
}
