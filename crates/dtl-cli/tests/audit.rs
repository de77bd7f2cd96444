//! `dtl audit` on groups of MNIST test digits written as PNG files: every group's image count and
//! correct count equal those of the model applied through the library to the same digits loaded
//! as a bundled domain (an independent path: the domain loader, not the image files), as folders
//! and as a CSV of attributes; bad attribute tables are named.

mod common;

use std::path::Path;

use common::{dtl, mnist_small_test_logits, native, small_model, stderr, write_png};
use dtl_data::DomainId;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn audit_counts_each_groups_correct_images() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = small_model(tmp.path());

    // 100 test digits: A = 0..40, B = 40..100 as folders; the same 100 in one folder with a CSV.
    let at28 = native(DomainId::MnistSmall);
    let n = 100;
    let mut csv = String::from("path,sex,age\n");
    for i in 0..n {
        let label = at28.test.labels()[i].to_string();
        let group = if i < 40 { "a" } else { "b" };
        let name = format!("{i:03}.png");
        write_png(
            &tmp.path().join(group).join(&label).join(&name),
            at28.test.image(i),
            28,
            false,
        );
        write_png(
            &tmp.path().join("all").join(&label).join(&name),
            at28.test.image(i),
            28,
            false,
        );
        let sex = if i.is_multiple_of(2) { "m" } else { "f" };
        let age = if i < 50 { "young" } else { "old" };
        csv.push_str(&format!("{label}/{name},{sex},{age}\n"));
    }
    std::fs::write(tmp.path().join("attrs.csv"), &csv).unwrap();

    // The reference: the model on the bundled domain at its 16x16 canvas, through the library.
    let at16_labels = native(DomainId::MnistSmall).test.labels()[..n].to_vec();
    let pred = mnist_small_test_logits(&ckpt, n)
        .argmax(1)
        .unwrap()
        .to_vec1::<u32>()
        .unwrap();
    let correct: Vec<bool> = (0..n).map(|i| pred[i] == at16_labels[i]).collect();
    let count = |f: &dyn Fn(usize) -> bool| (0..n).filter(|&i| f(i) && correct[i]).count() as u64;

    let out = tmp.path().join("audit");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let o = dtl(&[
        "audit",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--group",
        &format!("group A={}", a.display()),
        "--group",
        &format!("group B=folder:{}", b.display()),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&out.join("audit.json"));
    let g = r["groups"].as_array().unwrap();
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[0]["group"].as_str(), g[0]["n"].as_u64()),
        (Some("group A"), Some(40))
    );
    assert_eq!(g[0]["correct"].as_u64(), Some(count(&|i| i < 40)));
    assert_eq!(
        (g[1]["n"].as_u64(), g[1]["correct"].as_u64()),
        (Some(60), Some(count(&|i| i >= 40)))
    );
    let acc = |x: &serde_json::Value| x["accuracy"].as_f64().unwrap();
    let (best, worst) = if acc(&g[0]) >= acc(&g[1]) {
        (&g[0], &g[1])
    } else {
        (&g[1], &g[0])
    };
    assert_eq!(r["worst"], worst["group"]);
    assert!((r["gap"].as_f64().unwrap() - (acc(best) - acc(worst))).abs() < 1e-12);
    let [lo, hi] = [0, 1].map(|i| r["gap_ci95"][i].as_f64().unwrap());
    assert!(lo <= r["gap"].as_f64().unwrap() && r["gap"].as_f64().unwrap() <= hi);
    for f in ["audit.md", "audit.svg", "audit.png"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(String::from_utf8_lossy(&o.stdout).contains("Worst group:"));

    // Attributes: four groups of 25, sorted by their values.
    let all = tmp.path().join("all");
    let attrs = tmp.path().join("attrs.csv");
    let by_csv = |csv: &Path, by: &str| {
        dtl(&[
            "audit",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--images",
            all.to_str().unwrap(),
            "--attributes",
            csv.to_str().unwrap(),
            "--by",
            by,
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let o = by_csv(&attrs, "sex,age");
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&out.join("audit.json"));
    let g = r["groups"].as_array().unwrap();
    let want: [(&str, &dyn Fn(usize) -> bool); 4] = [
        ("f / old", &|i| i % 2 == 1 && i >= 50),
        ("f / young", &|i| i % 2 == 1 && i < 50),
        ("m / old", &|i| i.is_multiple_of(2) && i >= 50),
        ("m / young", &|i| i.is_multiple_of(2) && i < 50),
    ];
    assert_eq!(g.len(), 4);
    for (x, (name, member)) in g.iter().zip(want) {
        assert_eq!(x["group"].as_str(), Some(name));
        assert_eq!(x["n"].as_u64(), Some(25));
        assert_eq!(x["correct"].as_u64(), Some(count(member)), "{name}");
    }

    // Bad tables are named: a missing row, a row of no image, a repeated row, an unknown column.
    let refused = |text: &str, by: &str| -> String {
        let p = tmp.path().join("bad.csv");
        std::fs::write(&p, text).unwrap();
        let o = by_csv(&p, by);
        assert!(!o.status.success(), "{text:.60}");
        stderr(&o)
    };
    let lines: Vec<&str> = csv.lines().collect();
    let e = refused(&lines[..n].join("\n"), "sex");
    assert!(e.contains("1 image(s)") && e.contains("have no row"), "{e}");
    let e = refused(&format!("{csv}7/999.png,m,old\n"), "sex");
    assert!(
        e.contains("bad.csv") && e.contains("line 102") && e.contains("999.png"),
        "{e}"
    );
    let e = refused(&format!("{csv}{}\n", lines[1]), "sex");
    assert!(e.contains("listed twice (first on line 2)"), "{e}");
    let e = refused(&csv, "colour");
    assert!(
        e.contains("no column `colour`") && e.contains("path, sex, age"),
        "{e}"
    );
    let e = refused(&csv.replace("path,", "file_name,"), "sex");
    assert!(e.contains("no `path`"), "{e}");
    // One group is nothing to compare.
    let o = dtl(&[
        "audit",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--group",
        &format!("A={}", a.display()),
    ]);
    assert!(stderr(&o).contains("at least two groups"), "{}", stderr(&o));
}
