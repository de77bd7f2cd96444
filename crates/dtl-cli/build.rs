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
        let dir = std::path::PathBuf::from(String::from_utf8_lossy(&top.stdout).trim());
        // Relative to this package when the git directory is the checkout's own `.git`, so that a
        // target directory shared by two checkouts watches the files of the one building.
        let manifest = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
        let local = manifest.join("../../.git");
        let watched = match (std::fs::canonicalize(&local), std::fs::canonicalize(&dir)) {
            (Ok(a), Ok(b)) if a == b => std::path::PathBuf::from("../../.git"),
            _ => dir,
        };
        for f in ["HEAD", "logs/HEAD"] {
            let p = watched.join(f);
            if manifest.join(&p).exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
