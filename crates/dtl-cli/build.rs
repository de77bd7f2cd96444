//! Records the git revision the `dtl` crate is built from (`DTL_GIT_REV`, empty outside a git
//! checkout), so that results name the code that made them rather than whatever the checkout holds
//! when a long run ends.

fn main() {
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("cargo:rustc-env=DTL_GIT_REV={rev}");
    // Rebuild when HEAD moves (`logs/HEAD` grows with every commit and checkout); only for files
    // that exist, since a missing one would rerun this script on every build.
    if let Ok(top) = std::process::Command::new("git")
        .args(["rev-parse", "--absolute-git-dir"])
        .output()
    {
        let dir = String::from_utf8_lossy(&top.stdout).trim().to_string();
        for f in ["HEAD", "logs/HEAD"] {
            let p = std::path::Path::new(&dir).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
