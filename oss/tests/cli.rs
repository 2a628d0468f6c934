//! The nacre-oss binary: format (flags over a TOML config), refusal to format over
//! another file system, info.

use std::path::Path;
use std::process::{Command, Output};

fn oss(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nacre-oss"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn format_info_and_refusals() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("oss-cli");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let dir = base.join("ost");
    let cfg = base.join("oss.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ost]\ndir = \"{}\"\nfsid = \"alpha\"\nindex = 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let dir_s = dir.to_str().unwrap();
    // The flag overrides the file's index.
    let o = oss(&["--config", cfg_s, "format", "--index", "7"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("alpha-OST0007"), "{}", text(&o));
    assert!(dir.join("O/ff").is_dir());
    let o = oss(&["info", "--dir", dir_s]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("alpha-OST0007") && t.contains("format version: 1"),
        "{t}"
    );
    // Same target again: left as is.
    let o = oss(&["--config", cfg_s, "format", "--index", "7"]);
    assert!(
        o.status.success() && text(&o).contains("left as is"),
        "{}",
        text(&o)
    );
    // Another file system: refused without --force.
    let o = oss(&["format", "--dir", dir_s, "--fsid", "beta"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let o = oss(&["format", "--dir", dir_s, "--fsid", "beta", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&oss(&["info", "--dir", dir_s])).contains("beta-OST0000"));
    // `--fsname` is the name, as nacre-mgs says; `--fsid` (above) its old spelling.
    let o = oss(&["format", "--dir", dir_s, "--fsname", "gamma", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&oss(&["info", "--dir", dir_s]));
    assert!(t.contains("gamma-OST0000") && t.contains("fsname:"), "{t}");
    let help = text(&oss(&["format", "--help"]));
    assert!(
        help.contains("--fsname") && help.contains("--fsid"),
        "{help}"
    );
    // A newer format version is refused on open.
    let sb = dir.join("nacre-ost.toml");
    let newer = std::fs::read_to_string(&sb)
        .unwrap()
        .replace("format_version = 1", "format_version = 2");
    std::fs::write(&sb, newer).unwrap();
    let o = oss(&["info", "--dir", dir_s]);
    assert!(
        !o.status.success() && text(&o).contains("newer"),
        "{}",
        text(&o)
    );
    // Not a target at all.
    let o = oss(&["info", "--dir", base.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not an OST"),
        "{}",
        text(&o)
    );
    let o = oss(&["format"]);
    assert!(
        !o.status.success() && text(&o).contains("--dir"),
        "{}",
        text(&o)
    );
}
