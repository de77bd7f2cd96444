//! The Yosinski sweep's bookkeeping on a tiny run (8x8 digits, one epoch): every network is
//! trained and recorded once, the summary's means and differences follow from the rows, and the
//! files, figure included, are written.

use dtl_cli::yosinski::{replot, reproduce, runs_csv, Split, SweepConfig};

#[test]
fn a_tiny_sweep_records_every_network_and_summarises_them() {
    let cfg = SweepConfig {
        splits: vec![Split::Random],
        seeds: vec![3],
        ns: vec![1, 7],
        epochs: 1,
        image_size: 8,
        b_train_size: Some(300),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let summary = reproduce(&cfg, &out).unwrap();

    let csv = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "split,setting,n,seed,top1");
    // baseA, baseB, then five settings for each of the two n.
    assert_eq!(lines.len(), 1 + 2 + 2 * 5, "{csv}");
    let rows: Vec<(String, String, usize, f64)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f[0], "random");
            assert_eq!(f[3], "3");
            (
                f[0].into(),
                f[1].into(),
                f[2].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect();
    for n in [1, 7] {
        let mut settings: Vec<&str> = rows.iter().filter(|r| r.2 == n).map(|r| r.1.as_str()).collect();
        settings.sort_unstable();
        assert_eq!(settings, ["AnB", "AnB+", "BnB", "BnB+", "RnB"]);
    }
    let top1 = |setting: &str, n: usize| rows.iter().find(|r| r.1 == setting && r.2 == n).unwrap().3;
    for (_, _, _, acc) in &rows {
        assert!((0.0..=1.0).contains(acc));
    }

    // One seed: means are the values (to the CSV's 4 decimals), std 0; the differences follow.
    let split = &summary.splits[0];
    assert_eq!(split.split, "random");
    assert!(
        split.tasks[0].contains("B = mnist-small") && split.tasks[0].contains("(300 train, "),
        "{:?}",
        split.tasks
    );
    assert!((split.base_b.mean - top1("baseB", 0)).abs() < 1e-4);
    assert_eq!(split.base_b.std, 0.0);
    for layer in &split.layers {
        let n = layer.n;
        assert!((layer.settings["BnB"].mean - top1("BnB", n)).abs() < 1e-4);
        let co = layer.co_adaptation_drop.unwrap();
        assert!((co - (split.base_b.mean - layer.settings["BnB"].mean)).abs() < 1e-12);
        let spec = layer.specificity_drop.unwrap();
        assert!((spec - (layer.settings["BnB"].mean - layer.settings["AnB"].mean)).abs() < 1e-12);
        let gain = layer.fine_tuning_gain.unwrap();
        assert!((gain - (layer.settings["AnB+"].mean - split.base_b.mean)).abs() < 1e-12);
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["splits"][0]["layers"].as_array().unwrap().len(), 2);
    let again: SweepConfig =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(again, cfg);

    let svg = std::fs::read_to_string(out.join("figure.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches("<polyline").count(),
        5,
        "one line of means per setting"
    );
    // A dot per network: 10 transfer runs, plus baseB's white dot.
    assert_eq!(svg.matches("r=\"2.5\"").count(), 10);
    assert_eq!(svg.matches("fill=\"white\" stroke=\"black\"").count(), 1);
    // The PNG: signature, and the IHDR size at twice the SVG's (420 x 348 per panel).
    let png = std::fs::read(out.join("figure.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (840, 696));
    assert!(png.len() > 5000, "a figure of {} bytes", png.len());
    assert_eq!(runs_csv(&[]), "split,setting,n,seed,top1\n");

    // Redrawing from the files gives the same figure; a damaged runs.csv is named with its line.
    std::fs::remove_file(out.join("figure.svg")).unwrap();
    std::fs::remove_file(out.join("figure.png")).unwrap();
    let again = replot(&out).unwrap();
    assert_eq!(again, summary_from_json(&out));
    assert_eq!(std::fs::read_to_string(out.join("figure.svg")).unwrap(), svg);
    assert_eq!(std::fs::read(out.join("figure.png")).unwrap(), png);
    let mut damaged = csv.clone();
    damaged.push_str("random,BnB,three,3,0.5\n");
    std::fs::write(out.join("runs.csv"), &damaged).unwrap();
    let err = replot(&out).unwrap_err().to_string();
    assert!(
        err.contains(&format!("runs.csv:{}", lines.len() + 1)) && err.contains("three"),
        "{err}"
    );
}

fn summary_from_json(dir: &std::path::Path) -> dtl_cli::yosinski::Summary {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn bad_sweep_settings_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (cfg, field) in [
        (
            SweepConfig {
                ns: vec![8],
                ..Default::default()
            },
            "ns",
        ),
        (
            SweepConfig {
                data: "huge".into(),
                ..Default::default()
            },
            "data",
        ),
    ] {
        let err = reproduce(&cfg, tmp.path()).unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// An interrupted sweep resumed with `reproduce_resuming` ends as the uninterrupted one: the rows
/// already in `runs.csv` are kept (a marked row shows they are not retrained), the others are
/// trained with the same results; another config is refused.
#[test]
fn a_resumed_sweep_equals_the_uninterrupted_one() {
    use dtl_cli::yosinski::{parse_runs_csv, reproduce_resuming};
    let cfg = SweepConfig {
        splits: vec![Split::Random],
        seeds: vec![4],
        ns: vec![2],
        epochs: 1,
        image_size: 8,
        b_train_size: Some(200),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    reproduce(&cfg, &full).unwrap();
    let path = full.join("runs.csv");
    let rows = parse_runs_csv(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(rows.len(), 7);

    // Interrupted after baseA, baseB and BnB, whose accuracy is marked to tell reuse from retraining.
    let part = tmp.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::copy(full.join("config.toml"), part.join("config.toml")).unwrap();
    let mut kept = rows[..3].to_vec();
    kept[2].top1 = 0.1234;
    std::fs::write(part.join("runs.csv"), runs_csv(&kept)).unwrap();
    reproduce_resuming(&cfg, &part, true).unwrap();
    let path = part.join("runs.csv");
    let resumed = parse_runs_csv(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(resumed[2].top1, 0.1234, "BnB was retrained");
    let mut expected = rows.clone();
    expected[2].top1 = 0.1234;
    assert_eq!(resumed, expected);

    let other = SweepConfig { epochs: 2, ..cfg };
    let err = reproduce_resuming(&other, &part, true).unwrap_err().to_string();
    assert!(err.contains("another config"), "{err}");
}

/// Sweeps of two seeds run apart merge into one whose statistics cover both: baseB's mean and
/// sample std are those of the two rows; a seed given twice is refused.
#[test]
fn sweeps_of_other_seeds_merge() {
    use dtl_cli::yosinski::{merge, parse_runs_csv};
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for seed in [5, 6] {
        let cfg = SweepConfig {
            splits: vec![Split::Random],
            seeds: vec![seed],
            ns: vec![1],
            epochs: 1,
            image_size: 8,
            b_train_size: Some(200),
            random_control: false,
            ..Default::default()
        };
        let dir = tmp.path().join(format!("s{seed}"));
        reproduce(&cfg, &dir).unwrap();
        dirs.push(dir);
    }
    let out = tmp.path().join("merged");
    let summary = merge(&dirs, &out).unwrap();
    let path = out.join("runs.csv");
    let rows = parse_runs_csv(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    assert_eq!(rows.len(), 2 * 6);
    let b: Vec<f64> = rows
        .iter()
        .filter(|r| r.setting == "baseB")
        .map(|r| r.top1)
        .collect();
    let mean = (b[0] + b[1]) / 2.0;
    let std = ((b[0] - mean).powi(2) + (b[1] - mean).powi(2)).sqrt();
    let s = &summary.splits[0];
    assert!((s.base_b.mean - mean).abs() < 1e-12 && (s.base_b.std - std).abs() < 1e-12);
    assert_eq!(s.tasks.len(), 2);
    assert!(out.join("figure.png").exists());
    let err = merge(&[dirs[0].clone(), dirs[0].clone()], &tmp.path().join("twice"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than one directory"), "{err}");
}

/// A sweep interrupted twice (the second time while resuming) keeps every finished row, and its
/// resumed summary is the uninterrupted one's bit for bit; rows that do not belong to the sweep
/// are refused before any reuse; a finished sweep is replaced only with `Existing::Overwrite`.
#[test]
fn twice_interrupted_sweeps_keep_their_rows_and_summaries() {
    use dtl_cli::yosinski::{parse_runs_csv, reproduce_in, reproduce_resuming, Existing, RunRow};
    let cfg = SweepConfig {
        splits: vec![Split::Random],
        seeds: vec![4],
        ns: vec![2],
        epochs: 1,
        image_size: 8,
        b_train_size: Some(200),
        ..Default::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full");
    let whole = reproduce(&cfg, &full).unwrap();
    let read_rows = |dir: &std::path::Path| {
        let path = dir.join("runs.csv");
        parse_runs_csv(&std::fs::read_to_string(&path).unwrap(), &path).unwrap()
    };
    let rows = read_rows(&full);
    // Not overwritten by accident; replaced on request.
    let err = reproduce(&cfg, &full).unwrap_err().to_string();
    assert!(err.contains("--overwrite") && err.contains("--resume"), "{err}");
    assert_eq!(read_rows(&full), rows);

    // Stopped once with baseA, baseB and AnB done (AnB comes after BnB and BnB+), then killed
    // again while resuming, after its first new network: every earlier row is still there.
    let part = tmp.path().join("part");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::copy(full.join("config.toml"), part.join("config.toml")).unwrap();
    let first: Vec<RunRow> = vec![rows[0].clone(), rows[1].clone(), rows[4].clone()];
    assert_eq!(first[2].setting, "AnB");
    std::fs::write(part.join("runs.csv"), runs_csv(&first)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(["yosinski", "--config"])
        .arg(part.join("config.toml"))
        .arg("--out")
        .arg(&part)
        .arg("--resume")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while read_rows(&part).len() <= first.len() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the resumed sweep ended before it was killed"
        );
        assert!(started.elapsed().as_secs() < 120);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let after_kill = read_rows(&part);
    for r in &first {
        assert!(
            after_kill.contains(r),
            "{r:?} lost by the second interruption: {after_kill:?}"
        );
    }
    reproduce_resuming(&cfg, &part, true).unwrap();
    assert_eq!(read_rows(&part), rows);
    let resumed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(part.join("summary.json")).unwrap()).unwrap();
    let mut whole = serde_json::to_value(&whole).unwrap();
    let mut resumed = resumed;
    whole.as_object_mut().unwrap().remove("seconds");
    resumed.as_object_mut().unwrap().remove("seconds");
    assert_eq!(resumed, whole, "the resumed summary differs");

    // Rows that are not this sweep's, or not an accuracy, are refused with the file named.
    for (bad, want) in [
        ("random,BnB,5,4,0.5", "not a network of this sweep"),
        ("random,BnB,2,9,0.5", "not a network of this sweep"),
        ("random,BnB,2,4,1.5", "not an accuracy"),
        ("random,CnB,2,4,0.5", "setting `CnB`"),
        ("random,baseA,3,4,0.5", "base networks have 0"),
        ("random,baseA,0,4,0.5\nrandom,baseA,0,4,0.6", "appears twice"),
    ] {
        std::fs::write(
            part.join("runs.csv"),
            format!("split,setting,n,seed,top1\n{bad}\n"),
        )
        .unwrap();
        let err = reproduce_resuming(&cfg, &part, true).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("runs.csv"), "{bad}: {err}");
    }
    std::fs::write(part.join("runs.csv"), runs_csv(&rows[..1])).unwrap();
    reproduce_in(&cfg, &part, Existing::Overwrite).unwrap();
    assert_eq!(read_rows(&part), rows);
}
